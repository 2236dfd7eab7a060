"""FP8 and fp16 accuracy on a model with trained-like (peaked) logits.

No checkpoint can be downloaded here, and random weights give flat logits, on which agreement
between precisions means little. So the random BERT-base is fine-tuned on a synthetic
span-extraction task generated here until its logits are peaked, then every precision of the
engine (padded and packed) is compared with the trained model in fp32 on held-out examples:
start and end agreement, exact match of the decoded span, and exact match against the truth.

The task, at SQuAD-like lengths ([CLS] question [SEP] context [SEP]): the context is filler
words with one to three runs of 1-8 "answer" words (their own id range); one run is
bracketed by an opening and a closing marker token, and the answer is that run with its
brackets (start on the opening marker, end on the closing one). The cue is local to the
marker tokens, so a random BERT-base learns it in a few hundred steps (a first version, whose
answer was the run after a marker that the question repeated, was still at loss 1.8 after
110 s); its logits then peak at the span's ends by several units, as a trained QA model's
do. It is not a test of reading comprehension: what it measures is whether FP8's error moves
the decisions of a confident model, and by how much it moves the logits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bertserve.qa.spans import best_spans
from gpu_common import Results, Target, free_engines, load_engine
from squad_workload import draw_lengths

__all__ = ["SpanTask", "evaluate", "fine_tune"]

CLS, SEP = 101, 102
OPEN, CLOSE = (200, 208), (208, 216)  # 8 opening and 8 closing marker ids
ANSWER_WORDS = (500, 1000)
FILLER = (1000, 28996)
MAX_ANSWER_LEN = 30
OUTPUTS = ("start_logits", "end_logits")
#: Training stops once the mean loss (start + end cross-entropy, halved) of the last 25 steps
#: is below this: both ends' probability above ~0.99.
STOP_LOSS = 0.01


class SpanTask:
    """Examples of the synthetic task: ids, token types, context mask, true start and end."""

    def __init__(self, seed: int, vocab: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.filler = (FILLER[0], min(FILLER[1], vocab))

    def example(self, length: int) -> dict[str, Any]:
        rng = self.rng
        q_len = int(rng.integers(6, 21))
        c_len = max(length - q_len - 3, 24)
        context = rng.integers(*self.filler, size=c_len)
        for _ in range(int(rng.integers(0, 3))):  # unbracketed runs of answer words
            size = int(rng.integers(1, 9))
            at = int(rng.integers(0, c_len - size))
            context[at : at + size] = rng.integers(*ANSWER_WORDS, size=size)
        size = int(rng.integers(1, 9))
        at = int(rng.integers(0, c_len - size - 1))
        context[at] = rng.integers(*OPEN)
        context[at + 1 : at + size] = rng.integers(*ANSWER_WORDS, size=size - 1)
        context[at + size] = rng.integers(*CLOSE)
        question = rng.integers(*self.filler, size=q_len)
        ids = np.concatenate([[CLS], question, [SEP], context, [SEP]]).astype(np.int64)
        offset = q_len + 2
        types = np.zeros(len(ids), dtype=np.int64)
        types[offset:] = 1
        ctx = np.zeros(len(ids), dtype=bool)
        ctx[offset : offset + c_len] = True
        return {
            "ids": ids, "types": types, "context": ctx,
            "start": at + offset, "end": at + size + offset,
        }  # fmt: skip

    def batch(self, lengths: np.ndarray) -> list[dict[str, Any]]:
        return [self.example(int(n)) for n in lengths]


def _padded(examples: list[dict[str, Any]], width: int | None = None) -> dict[str, np.ndarray]:
    width = width or max(len(e["ids"]) for e in examples)
    out = {
        "input_ids": np.zeros((len(examples), width), np.int64),
        "token_type_ids": np.zeros((len(examples), width), np.int64),
        "attention_mask": np.zeros((len(examples), width), np.int64),
    }
    for row, e in enumerate(examples):
        n = len(e["ids"])
        out["input_ids"][row, :n] = e["ids"]
        out["token_type_ids"][row, :n] = e["types"]
        out["attention_mask"][row, :n] = 1
    return out


def fine_tune(
    res: Results, random_vdir: Path, out_vdir: Path, target: Target, seconds: float
) -> None:
    """Train the random checkpoint on the task for `seconds` at most (bf16 autocast, AdamW),
    stopping early once the loss of the last 25 steps is below STOP_LOSS, then save it as
    the engine reads it."""
    import torch
    import transformers

    dev = "cpu" if target.dry_run else f"cuda:{target.gpu_id}"
    model = transformers.BertForQuestionAnswering.from_pretrained(str(random_vdir)).to(dev)
    with torch.no_grad():  # the checkpoint's head is spread for random-weight argmax: reset it
        model.qa_outputs.weight.normal_(0, 0.02)
        model.qa_outputs.bias.zero_()
    model.train()
    task = SpanTask(seed=1, vocab=target.vocab)
    batch_size = 8 if target.dry_run else 64
    max_steps = 20 if target.dry_run else 6000
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    warmup = 10 if target.dry_run else 50
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    # Batches of similar lengths (a sorted pool cut into batches, in random order), so a
    # step computes about the mix's mean length instead of the batch's longest row.
    pool = np.sort(draw_lengths(max_steps * batch_size, seed=2)[: max_steps * batch_size])
    batches = pool.reshape(max_steps, batch_size)
    order = np.random.default_rng(3).permutation(max_steps)
    losses: list[float] = []
    started = time.perf_counter()
    step = 0
    while step < max_steps and time.perf_counter() - started < seconds:
        if len(losses) >= 25 and float(np.mean(losses[-25:])) < STOP_LOSS:
            break
        examples = task.batch(batches[order[step]])
        feed = {k: torch.from_numpy(v).to(dev) for k, v in _padded(examples).items()}
        starts = torch.tensor([e["start"] for e in examples], device=dev)
        ends = torch.tensor([e["end"] for e in examples], device=dev)
        with torch.autocast(device_type="cpu" if target.dry_run else "cuda", dtype=torch.bfloat16):
            out = model(**feed, start_positions=starts, end_positions=ends)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        step += 1
    train_s = time.perf_counter() - started
    model.eval()
    out_vdir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_vdir), safe_serialization=True)
    curve = [round(float(np.mean(losses[i : i + 25])), 4) for i in range(0, len(losses), 25)]
    res.put("training", {"steps": step, "seconds": train_s, "batch": batch_size, "loss": curve})
    res.line(
        f"fine-tune: {step} steps x {batch_size} in {train_s:.0f} s, loss "
        f"{curve[0] if curve else float('nan'):.2f} -> {curve[-1] if curve else float('nan'):.3f}"
    )
    del model, opt
    free_engines()


#: (name, precision, packed)
VARIANTS = (
    ("engine fp32", "fp32", False),
    ("engine fp16", "fp16", False),
    ("engine bf16", "bf16", False),
    ("engine fp8", "fp8", False),
    ("packed fp16", "fp16", True),
    ("packed fp8", "fp8", True),
)


def _spans(start: np.ndarray, end: np.ndarray, context: np.ndarray) -> tuple[np.ndarray, ...]:
    s, e, _ = best_spans(start, end, context, MAX_ANSWER_LEN)
    return s, e


def evaluate(
    res: Results, vdir: Path, target: Target, count: int,
    variants: tuple[tuple[str, str, bool], ...] = VARIANTS,
) -> None:  # fmt: skip
    """Every variant against the trained model in fp32 (transformers, eager, no TF32) on
    `count` held-out examples at SQuAD-like lengths."""
    import torch
    import transformers

    dev = "cpu" if target.dry_run else f"cuda:{target.gpu_id}"
    task = SpanTask(seed=99, vocab=target.vocab)
    examples = task.batch(draw_lengths(count, seed=98)[:count])
    feed = _padded(examples, 384)
    context = np.zeros(feed["input_ids"].shape, dtype=bool)
    for row, e in enumerate(examples):
        context[row, : len(e["context"])] = e["context"]
    truth = (np.array([e["start"] for e in examples]), np.array([e["end"] for e in examples]))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = transformers.BertForQuestionAnswering.from_pretrained(
        str(vdir), attn_implementation="eager"
    ).to(dev)
    starts, ends = [], []
    with torch.no_grad():
        for lo in range(0, count, 64):
            part = {k: torch.from_numpy(v[lo : lo + 64]).to(dev) for k, v in feed.items()}
            out = model(**part)
            starts.append(out.start_logits.float().cpu().numpy())
            ends.append(out.end_logits.float().cpu().numpy())
    del model
    free_engines()
    ref = (np.concatenate(starts), np.concatenate(ends))
    ref_span = _spans(*ref, context)
    margins = [np.diff(np.sort(np.where(context, x, -np.inf), axis=1)[:, -2:])[:, 0] for x in ref]
    res.put(
        "accuracy_reference",
        {
            "examples": count,
            "em_vs_truth": float(np.mean((ref_span[0] == truth[0]) & (ref_span[1] == truth[1]))),
            # top-1 minus top-2 logit over the context: how decided the fp32 model is
            "start_logit_margin_median": float(np.median(margins[0])),
            "end_logit_margin_median": float(np.median(margins[1])),
            "margin_below_1": float(np.mean(np.minimum(*margins) < 1.0)),
        },
    )
    ref_info = res.data["accuracy_reference"]
    res.line(
        f"accuracy: trained model fp32 exact match vs truth {ref_info['em_vs_truth']:.3f}, "
        f"median start/end logit margin {ref_info['start_logit_margin_median']:.1f}/"
        f"{ref_info['end_logit_margin_median']:.1f}, {ref_info['margin_below_1']:.1%} of "
        "examples with a margin below 1"
    )
    for name, precision, packed in variants:
        # eager (no graphs): the same kernels, without capturing ~20 token buckets a variant
        params = {
            "precision": precision,
            "seq_buckets": "384",
            "gelu": "erf",
            "cuda_graphs": "false",
        }
        params.update({"packing": "true"} if packed else {"batch_buckets": "64"})
        try:
            inst = load_engine(vdir, params, 64, target)
            parts = [
                inst.run({k: v[lo : lo + 64] for k, v in feed.items()}, list(OUTPUTS))
                for lo in range(0, count, 64)
            ]
            inst.close()
        except Exception as exc:  # noqa: BLE001
            res.note(f"accuracy {name}: {type(exc).__name__}: {exc}"[:500])
            continue
        free_engines()
        got = (
            np.concatenate([p["start_logits"] for p in parts]),
            np.concatenate([p["end_logits"] for p in parts]),
        )
        span = _spans(*got, context)
        am = [np.where(context, x, -np.inf).argmax(1) for x in got]
        ref_am = [np.where(context, x, -np.inf).argmax(1) for x in ref]
        err = max(float(np.abs(got[k] - ref[k])[context].max()) for k in (0, 1))
        record = {
            "variant": name,
            "start_agree": float(np.mean(am[0] == ref_am[0])),
            "end_agree": float(np.mean(am[1] == ref_am[1])),
            "span_em_vs_fp32": float(np.mean((span[0] == ref_span[0]) & (span[1] == ref_span[1]))),
            "em_vs_truth": float(np.mean((span[0] == truth[0]) & (span[1] == truth[1]))),
            "max_abs_logit_err": err,
        }
        res.add("accuracy", record)
        res.line(
            f"accuracy {name:12s} start/end agree {record['start_agree']:.4f}/"
            f"{record['end_agree']:.4f} span EM vs fp32 {record['span_em_vs_fp32']:.4f} "
            f"EM vs truth {record['em_vs_truth']:.4f} max|d| {err:.3f}"
        )
