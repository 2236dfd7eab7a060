"""What sequence-length bucketing saves in the QA pipeline, measured in-process.

Runs the QA pipeline's own code (tokenize into windows, plan model calls, pad, ONNX Runtime,
span extraction) over SQuAD-format question/context pairs three ways per round: every call
padded to max_seq_len (the reference's fixed 384), buckets 64/128/256/384 (the pipeline's
default), and a bucket every 64 tokens. Pairs go through in groups of `--batch`, as the
server's dynamic batcher would hand them to one pipeline run. Prints a markdown table: model
calls, tokens computed, the model time of one round priced at each call shape's best time
(stable on a shared machine), the best round's whole-pipeline time, and whether the answers
match the fixed padding's.

The model is any QA model folder `bertserve build` writes (config.pbtxt, 1/model.onnx,
1/tokenizer/tokenizer.json). Random weights cost exactly what real ones do:

    bertserve build --preset bert-base --weights random --only bert_base_onnx_cpu --output models
    python benchmarks/qa_bucketing.py --model models/bert_base_onnx_cpu
    python benchmarks/qa_bucketing.py --model models/bert_base_onnx_cpu --data dev-v1.1.json \
        --limit 400 --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from bertserve.backends.qa_pipeline import PipelineSettings, QAPipelineInstance, find_tokenizer
from bertserve.qa.spans import SpanSettings
from bertserve.qa.squad import Example, load_squad, sample_path
from bertserve.qa.texts import TextLimits
from bertserve.qa.windows import Windower, WindowSettings
from harness import cpu_name, markdown_table

STRATEGIES = MappingProxyType(
    {
        "fixed 384": (384,),
        "buckets 64/128/256/384": (64, 128, 256, 384),
        "buckets every 64": (64, 128, 192, 256, 320, 384),
    }
)


@dataclass
class Tally:
    seconds: list[float] = field(default_factory=list)
    padded_tokens: int = 0
    real_tokens: int = 0
    calls: int = 0
    answers: list[str] = field(default_factory=list)
    shapes: list[tuple[int, int]] = field(default_factory=list)  # (windows, length) a call
    model_seconds: float = 0.0  # the calls of one round at each shape's best time

    def reset(self) -> None:
        self.seconds, self.answers, self.shapes = [], [], []
        self.padded_tokens = self.real_tokens = self.calls = 0


def session(model_path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def word_tokenizer(examples: list[Example]) -> Any:
    """A cased BERT WordPiece tokenizer whose vocabulary holds every word of the data whole
    (BERT's special-token ids kept). A real 30k vocabulary keeps common words whole and splits
    rare ones, so token counts come out close to, and a little below, the real tokenizer's:
    far closer than a generated, nearly character-level vocabulary."""
    import re

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    vocab_list = [specials.get(i, f"[unused{i}]") for i in range(104)]
    chars = [chr(c) for c in range(0x21, 0x7F)]
    texts = [t for e in examples for t in (e.question, e.context)]
    words = sorted({w for t in texts for w in re.findall(r"\w+", t)})
    vocab_list += chars + [f"##{c}" for c in chars] + words
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 101), ("[SEP]", 102)],
    )
    return tokenizer


def pipeline(
    model_dir: Path,
    buckets: tuple[int, ...],
    batch: int,
    sess: Any,
    tally: Tally,
    tokenizer: Any | None,
) -> QAPipelineInstance:
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}

    def start_model(
        name: str, version: str, feed: dict[str, np.ndarray]
    ) -> Callable[[], dict[str, np.ndarray]]:
        tally.calls += 1
        tally.shapes.append(feed["input_ids"].shape)
        tally.padded_tokens += int(feed["input_ids"].size)
        tally.real_tokens += int(feed["attention_mask"].sum())
        result = dict(zip(names, sess.run(names, feed), strict=True))
        return lambda: result

    settings = PipelineSettings(
        qa_model=model_dir.name,
        qa_model_version="",
        tokenizer="",
        windows=WindowSettings(max_seq_len=384, doc_stride=128, max_query_len=64),
        spans=SpanSettings(),
        limits=TextLimits(),
        buckets=buckets,
        max_windows_per_call=batch,
        qa_inputs=tuple(
            n for n in ("input_ids", "attention_mask", "token_type_ids") if n in inputs
        ),
        qa_outputs=("start_logits", "end_logits"),
    )
    if tokenizer is None:
        windower = Windower.from_file(find_tokenizer(settings, model_dir / "1"), settings.windows)
    else:
        windower = Windower(tokenizer, settings.windows)
    return QAPipelineInstance(settings, windower, start_model)


def run_once(instance: QAPipelineInstance, groups: list[list[Example]], tally: Tally) -> None:
    answers: list[str] = []
    began = time.perf_counter()
    for group in groups:
        found = instance.answer([e.question for e in group], [e.context for e in group])
        answers.extend(a.text for a in found)
    tally.seconds.append(time.perf_counter() - began)
    tally.answers = answers


def shape_costs(
    sess: Any, shapes: set[tuple[int, int]], repeats: int
) -> dict[tuple[int, int], float]:
    """Each call shape's best time over `repeats` runs, shapes interleaved: on a shared
    machine the best of several runs is the stable figure, and the sum of best times over a
    strategy's calls compares strategies free of the load that hit one round and not another."""
    names = {i.name for i in sess.get_inputs()}
    best: dict[tuple[int, int], float] = {}
    for _ in range(repeats):
        for rows, length in sorted(shapes):
            feed = {
                "input_ids": np.full((rows, length), 1000, dtype=np.int64),
                "attention_mask": np.ones((rows, length), dtype=np.int64),
                "token_type_ids": np.zeros((rows, length), dtype=np.int64),
            }
            began = time.perf_counter()
            sess.run(None, {k: v for k, v in feed.items() if k in names})
            spent = time.perf_counter() - began
            best[(rows, length)] = min(spent, best.get((rows, length), spent))
    return best


def markdown(
    results: dict[str, Tally],
    examples: list[Example],
    source: str,
    args: argparse.Namespace,
    random_weights: bool,
    windows: list[int],
) -> str:
    import onnxruntime as ort
    import tokenizers

    fixed = results["fixed 384"]
    rounds = len(fixed.seconds)
    lines = [
        f"## QA pipeline: sequence-length bucketing ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"`python benchmarks/qa_bucketing.py --model {args.model.name} --batch {args.batch} "
        f"--tokenizer {args.tokenizer}`: {len(examples)} "
        f"question/context pairs from {source} ({len(windows)} windows of 384 tokens at most, "
        f"doc stride 128; window lengths min {min(windows)}, median "
        f"{int(statistics.median(windows))}, max {max(windows)}), {args.batch} pairs per pipeline "
        f"run, the best of {rounds} rounds (the least disturbed). Time covers the whole "
        "pipeline: tokenization, ONNX Runtime, span extraction.",
        "",
    ]
    base = min(fixed.seconds)
    rows = []
    for name, t in results.items():
        seconds = min(t.seconds)
        same = sum(a == b for a, b in zip(t.answers, fixed.answers, strict=True))
        rows.append(
            (name, t.calls // rounds, f"{t.padded_tokens // rounds:,}")
            + (f"{100 * (1 - t.real_tokens / t.padded_tokens):.0f}%", f"{t.model_seconds:.2f}")
            + (f"{fixed.model_seconds / t.model_seconds:.2f}x", f"{seconds:.2f}")
            + (f"{len(examples) / seconds:.1f}", f"{base / seconds:.2f}x")
            + (f"{same}/{len(examples)}",)
        )
    headers = ("padding", "model calls", "tokens computed", "padding share")
    headers += ("model s (best per shape)", "model speedup", "pipeline s (best round)")
    headers += ("pairs/s", "pipeline speedup", "same answers")
    lines.append(markdown_table(headers, rows, numeric=(False,) + (True,) * 9))
    lines += [
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, "
        f"{args.threads} intra-op threads; onnxruntime {ort.__version__}, tokenizers "
        f"{tokenizers.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}. 1-minute load average "
        f"{args.load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other work on "
        "the machine slows every row alike: the rows alternate within each round).",
    ]
    if random_weights:
        lines.append(
            "Weights are random (seeded): the compute cost is the real model's, the answers are "
            'meaningless ("same answers" only checks that padding does not change them).'
        )
    if args.tokenizer == "words":
        lines.append(
            "Token counts come from a vocabulary of the data's own words (each word one token); a "
            "real BERT vocabulary splits rare words, so its windows run a little longer."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        help="QA model folder: config.pbtxt, 1/model.onnx, 1/tokenizer/",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="SQuAD JSON (default: bertserve's sample)"
    )
    parser.add_argument("--limit", type=int, default=0, help="use the first N questions")
    parser.add_argument("--batch", type=int, default=4, help="pairs per pipeline run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4, help="timed runs of each shape")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--tokenizer",
        choices=("words", "model"),
        default="words",
        help="words: a vocabulary of the data's own words (realistic lengths, default); "
        "model: the model's tokenizer (use it for a real checkpoint's vocabulary)",
    )
    parser.add_argument("--append", type=Path, default=None, help="append the section here")
    args = parser.parse_args(argv)
    args.load = os.getloadavg()

    data = args.data or sample_path()
    _, examples = load_squad(data)
    if args.limit:
        examples = examples[: args.limit]
    random.Random(0).shuffle(examples)  # requests arrive in no particular order
    groups = [examples[i : i + args.batch] for i in range(0, len(examples), args.batch)]
    config = (args.model / "config.pbtxt").read_text()
    random_weights = 'string_value: "random"' in config

    sess = session(args.model / "1" / "model.onnx", args.threads)
    tokenizer = word_tokenizer(examples) if args.tokenizer == "words" else None
    tallies = {name: Tally() for name in STRATEGIES}
    instances = {
        name: pipeline(args.model, buckets, args.batch, sess, tallies[name], tokenizer)
        for name, buckets in STRATEGIES.items()
    }
    windower = next(iter(instances.values())).windower
    windows = [len(w) for e in examples for w in windower.split([e.question], [e.context])]
    for name, instance in instances.items():  # warm-up, not counted
        instance.answer([groups[0][0].question], [groups[0][0].context])
        tallies[name].reset()
    for _ in range(args.rounds):  # alternate, so that load elsewhere falls on all alike
        for name, instance in instances.items():
            run_once(instance, groups, tallies[name])
    costs = shape_costs(sess, {sh for t in tallies.values() for sh in t.shapes}, args.repeats)
    for tally in tallies.values():
        one_round = tally.shapes[: len(tally.shapes) // args.rounds]
        tally.model_seconds = sum(costs[shape] for shape in one_round)
    text = markdown(
        tallies,
        examples,
        data.name,
        args,
        random_weights,
        windows,
    )
    print(text)
    if args.append:
        with args.append.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
