"""In-process stages of the GPU benchmark: the card's ceilings, parity of the padded and the
packed engine with transformers fp32 on SQuAD-like rows, throughput of both on the same rows,
and batch-1 latency through `ModelInstance.run` (numpy in and out)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpu_common import (
    Results,
    Target,
    free_engines,
    load_engine,
    median_ms,
    realistic_rows,
    stack_rows,
)

__all__ = [
    "ceilings", "engine_params", "full_row", "kernel_profile", "latency", "parity", "throughput",
    "typical_row",
]  # fmt: skip

OUTPUTS = ("start_logits", "end_logits")
PADDED_BUCKETS = "1,4,16,64,128,256"


def ceilings(res: Results, target: Target) -> None:
    """fp16 and FP8 matmul rates (8192^3) and device copy bandwidth: the two numbers every
    result is read against."""
    if target.dry_run:
        return
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    out = {"matmul_fp16_tflops": 2 * n**3 / median_ms(lambda: a @ b, 20, target) / 1e9}
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
    one = torch.ones((), device="cuda")
    ms8 = median_ms(
        lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=torch.bfloat16, use_fast_accum=True),
        20, target,
    )  # fmt: skip
    out["matmul_fp8_tflops"] = 2 * n**3 / ms8 / 1e9
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    out["copy_gbps"] = 2 * (1 << 30) / median_ms(lambda: dst.copy_(src), 20, target) / 1e6
    res.put("ceilings", out)
    res.line(
        f"ceilings: fp16 {out['matmul_fp16_tflops']:.0f} TFLOP/s, fp8 "
        f"{out['matmul_fp8_tflops']:.0f} TFLOP/s, copy {out['copy_gbps']:.0f} GB/s"
    )


def engine_params(precision: str, packed: bool, **extra: str) -> dict[str, str]:
    params = {"precision": precision, "gelu": "tanh", "seq_buckets": "384"}
    if packed:
        params["packing"] = "true"
    else:
        params["batch_buckets"] = PADDED_BUCKETS
    return {**params, **extra}


#: (name, precision, packed)
PARITY_VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("padded fp16", "fp16", False),
    ("padded fp8", "fp8", False),
    ("packed fp16", "fp16", True),
    ("packed fp8", "fp8", True),
)


def parity(res: Results, vdir: Path, target: Target) -> None:
    """Each variant on 16 SQuAD-like rows sent padded to 384 with masks, against
    transformers fp32 on each row alone (no padding at all)."""
    import torch
    import transformers

    rows = realistic_rows(16, seed=11)
    lengths = [int(r["attention_mask"].sum()) for r in rows]
    dev = "cpu" if target.dry_run else f"cuda:{target.gpu_id}"
    torch.backends.cuda.matmul.allow_tf32 = False
    model = transformers.BertForQuestionAnswering.from_pretrained(
        str(vdir), attn_implementation="eager"
    ).to(dev)
    ref = []
    with torch.no_grad():
        for r, n in zip(rows, lengths, strict=True):
            feed = {k: torch.from_numpy(v[None, :n]).to(dev) for k, v in r.items()}
            out = model(**feed)
            ref.append((out.start_logits[0].cpu().numpy(), out.end_logits[0].cpu().numpy()))
    del model
    request = stack_rows(rows, 384)
    for name, precision, packed in PARITY_VARIANTS:
        try:
            inst = load_engine(vdir, engine_params(precision, packed), 256, target)
            got = inst.run(request, list(OUTPUTS))
            inst.close()
        except Exception as exc:  # noqa: BLE001 - a variant this torch lacks is noted
            res.note(f"parity {name}: {type(exc).__name__}: {exc}"[:500])
            continue
        record: dict[str, Any] = {"variant": name, "rows": len(rows)}
        for k, label in enumerate(("start", "end")):
            diffs = [np.abs(got[OUTPUTS[k]][i, :n] - ref[i][k]) for i, n in enumerate(lengths)]
            refs = np.concatenate([ref[i][k] for i in range(len(rows))])
            record[f"{label}_max_abs_err"] = float(max(d.max() for d in diffs))
            record[f"{label}_rel_err"] = float(
                np.linalg.norm(np.concatenate(diffs)) / np.linalg.norm(refs)
            )
            record[f"{label}_argmax_agree"] = float(
                np.mean(
                    [
                        got[OUTPUTS[k]][i, :n].argmax() == ref[i][k].argmax()
                        for i, n in enumerate(lengths)
                    ]
                )
            )
        res.add("parity", record)
        res.line(
            f"parity {name:22s} max|d| {record['start_max_abs_err']:.3f}/"
            f"{record['end_max_abs_err']:.3f} rel {record['start_rel_err']:.4f}/"
            f"{record['end_rel_err']:.4f} argmax {record['start_argmax_agree']:.2f}/"
            f"{record['end_argmax_agree']:.2f}"
        )
        free_engines()


def _two_instances(a: Any, b: Any, work: Any, seconds: float, rows: int) -> float:
    """Rows per second of two instances, each on its own thread calling `work(instance)`
    back to back (each a batch of `rows`), as the server's instance threads run them."""
    counts = [0, 0]
    stop = time.perf_counter() + seconds

    def loop(k: int, inst: Any) -> None:
        while time.perf_counter() < stop:
            work(inst)
            counts[k] += rows

    work(a)
    work(b)
    threads = [threading.Thread(target=loop, args=(k, i)) for k, i in enumerate((a, b))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def _fill(
    rows: list[dict[str, np.ndarray]], budget: int, max_rows: int = 1 << 30
) -> list[dict[str, np.ndarray]]:
    """The first rows whose real tokens fit the budget (what the token batcher forms)."""
    out, tokens = [], 0
    for r in rows:
        n = int(r["attention_mask"].sum())
        if tokens + n > budget or len(out) == max_rows:
            break
        out.append(r)
        tokens += n
    return out


def throughput(
    res: Results,
    vdir: Path,
    target: Target,
    seconds: float,
    precisions: tuple[str, ...] = ("fp16", "fp8"),
    budgets: tuple[int, ...] = (16384, 32768),
    padded: bool = True,
) -> None:
    """Sequences per second, in process, padded engine vs packed engine, on the SQuAD-like
    mix (and the padded engine on full 384-token rows, the issue's baseline; `padded`
    False: the packed engine only)."""
    pool = realistic_rows(4096, seed=3)
    mix_tokens = np.mean([int(r["attention_mask"].sum()) for r in pool])
    res.put("mix_mean_tokens", float(mix_tokens))
    batch_rows = 16 if target.dry_run else 128
    if target.dry_run:
        budgets = (2048,)
    for precision in precisions:
        if padded:
            params = engine_params(precision, False)
            a, b = (load_engine(vdir, params, 256, target) for _ in range(2))
            full = stack_rows(pool[:batch_rows], 384)
            full["attention_mask"][:] = 1
            mixed = stack_rows(pool[:batch_rows], 384)
            for label, request in (("full 384", full), ("SQuAD mix, padded", mixed)):
                rate = _two_instances(
                    a, b, lambda i, x=request: i.run(x, list(OUTPUTS)), seconds, batch_rows
                )
                _record(res, f"padded {precision}", label, batch_rows, rate)
            del a, b
            free_engines()
        budgets_only(res, vdir, target, seconds, precision, pool, budgets)


def budgets_only(
    res: Results,
    vdir: Path,
    target: Target,
    seconds: float,
    precision: str,
    pool: list[dict[str, np.ndarray]],
    budgets: tuple[int, ...],
) -> None:
    """The packed engine at each token budget: two instances, batches filled from `pool`."""
    for budget in budgets:
        params = engine_params(precision, True, max_tokens=str(budget))
        rows = _max_rows(budget)
        try:
            a, b = (load_engine(vdir, params, rows, target) for _ in range(2))
        except Exception as exc:  # noqa: BLE001 - then measure it without graphs
            res.note(f"packed {precision} with graphs: {type(exc).__name__}: {exc}"[:800])
            params["cuda_graphs"] = "false"
            a, b = (load_engine(vdir, params, rows, target) for _ in range(2))
        chosen, batch = _mix_batch(a, pool, budget)
        rate = _two_instances(
            a, b, lambda i, x=batch: i.launch_packed(x, list(OUTPUTS))(), seconds, len(chosen)
        )
        _record(res, f"packed {precision}", f"SQuAD mix, {budget} tokens", len(chosen), rate)
        if not target.dry_run and params.get("cuda_graphs") != "false":
            import torch

            prof = a.packed[max(a.packed)]
            with torch.inference_mode():
                prof.launch(batch.tokens, batch.positions, batch.lengths)()
            ms = median_ms(prof.graph.replay, 20, target)
            _record(
                res, f"packed {precision}", f"graph replay, {budget} tokens",
                len(chosen), len(chosen) / ms * 1e3,
            )  # fmt: skip
        del a, b
        free_engines()


def _max_rows(budget: int) -> int:
    """max_batch_size of a packing model with this token budget, as the server's pk8 (32k)
    and pk8w (64k) are configured."""
    return 512 if budget > 32768 else 256


def _mix_batch(inst: Any, pool: list[dict[str, np.ndarray]], budget: int) -> tuple[list[Any], Any]:
    """The rows of `pool` the token batcher takes at `budget` tokens, and them packed for
    `inst`."""
    from bertserve.backends.packing import pack

    chosen = _fill(pool, budget, inst.packing.max_rows)
    return chosen, pack([stack_rows(chosen, 384)], inst.packing)


def _record(res: Results, engine: str, load: str, rows: int, rate: float) -> None:
    res.add("inprocess", {"engine": engine, "load": load, "rows": rows, "seq_per_s": rate})
    res.line(f"in-process {engine:12s} {load:30s} {rows:5d} rows/batch {rate:9.0f} seq/s")


def typical_row() -> dict[str, np.ndarray]:
    """One SQuAD-like window of 140-170 real tokens (the mix averages 156), padded to 384."""
    rows = realistic_rows(64, seed=5)
    return next(r for r in rows if 140 <= int(r["attention_mask"].sum()) <= 170)


def full_row(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`row` as a batch of one 384-token row with every position attended (the padded
    engine's dense graph)."""
    full = stack_rows([row], 384)
    full["attention_mask"][:] = 1
    return full


def run_ms(inst: Any, x: dict[str, np.ndarray], reps: int, warmup: int) -> list[float]:
    """`inst.run(x)` timed `reps` times after `warmup` untimed calls, in milliseconds."""
    times = []
    for i in range(reps + warmup):
        t = time.perf_counter()
        inst.run(x, list(OUTPUTS))
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return times


def latency(res: Results, vdir: Path, target: Target) -> None:
    """Batch-1 `run()` latency, padded vs packed: a 384-token row and a 156-token one."""
    reps = 20 if target.dry_run else 300
    typical = typical_row()
    full = full_row(typical)
    short = stack_rows([typical])
    for precision in ("fp16", "fp8"):
        for packed in (False, True):
            inst = load_engine(vdir, engine_params(precision, packed), 256, target)
            engine = f"{'packed' if packed else 'padded'} {precision}"
            for label, x in (
                ("b1 384 tokens", full),
                (f"b1 {short['input_ids'].shape[1]} tokens", short),
            ):
                times = run_ms(inst, x, reps, warmup=5)
                p50, p99 = float(np.percentile(times, 50)), float(np.percentile(times, 99))
                res.add("latency", {"engine": engine, "load": label, "p50_ms": p50, "p99_ms": p99})
                res.line(
                    f"in-process {engine:12s} {label:30s} run() p50 {p50:.3f} ms p99 {p99:.3f}"
                )
            inst.close()
            free_engines()


def kernels(res: Results, vdir: Path, target: Target, precision: str, budget: int) -> None:
    """Where one packed batch's GPU time goes: the batch the token batcher forms from the
    SQuAD mix at `budget` tokens, its forward pass run eagerly (the kernels the CUDA graph
    replays) under torch.profiler, five passes; per kernel name the mean time a pass and its
    share, beside the graph replay's own time."""
    import torch

    params = engine_params(precision, True, max_tokens=str(budget))
    inst = load_engine(vdir, params, _max_rows(budget), target)
    chosen, batch = _mix_batch(inst, realistic_rows(4096, seed=3), budget)
    prof = inst.packed[max(inst.packed)]
    with torch.inference_mode():
        prof.launch(batch.tokens, batch.positions, batch.lengths)()
    replay = prof.graph.replay if prof.graph is not None else None
    profiled = kernel_profile(prof.compute, replay, target, replay_reps=20, eager_reps=10, top=40)
    res.put(f"kernels {precision} {budget}", {
        "rows": len(chosen), "tokens": int(batch.total_tokens), "bucket": prof.tokens,
        **profiled,
    })  # fmt: skip
    del inst
    free_engines()


def kernel_profile(
    compute: Callable[[], Any],
    replay: Callable[[], Any] | None,
    target: Target,
    replay_reps: int,
    eager_reps: int,
    top: int,
) -> dict[str, Any]:
    """Per-kernel GPU time of `compute` (the eager pass a CUDA graph captures) over five
    passes under torch.profiler, the `top` kernels by time with their share, beside the median
    time of the graph's `replay` (0 without one) and of the eager pass."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    passes = 5
    with torch.inference_mode():
        replay_ms = median_ms(replay, replay_reps, target) if replay is not None else 0.0
        eager_ms = median_ms(compute, eager_reps, target)
        activity = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU  # (the dry run)
        with profile(activities=[activity]) as p:
            for _ in range(passes):
                compute()
            if cuda:
                torch.cuda.synchronize()
    rows = []
    for e in p.key_averages():
        us = e.device_time_total if cuda else e.self_cpu_time_total
        if us > 0 and e.key and not e.key.startswith(("ProfilerStep", "cuda")):
            rows.append({"kernel": e.key[:160], "us_per_pass": us / passes,
                         "calls_per_pass": e.count / passes})  # fmt: skip
    rows.sort(key=lambda r: -r["us_per_pass"])
    total = sum(r["us_per_pass"] for r in rows)
    for r in rows:
        r["share"] = r["us_per_pass"] / total if total else 0.0
    return {
        "graph_replay_ms": replay_ms,
        "eager_ms": eager_ms,
        "kernel_ms_per_pass": total / 1e3,
        "kernels_per_pass": sum(r["calls_per_pass"] for r in rows),
        "kernels": rows[:top],
    }


def replay(
    res: Results, vdir: Path, target: Target, precision: str, budget: int, **extra: str
) -> None:
    """One packed batch of the mix at `budget` tokens as the engine's CUDA graph replays it,
    for engine parameters `extra` (e.g. packed_attention): its time and rows per second, and
    its logits' largest difference from the default engine's on the same batch."""
    import torch

    logits = {}
    pool = realistic_rows(4096, seed=3)
    for label, params in (("default", {}), ("variant", extra)):
        inst = load_engine(
            vdir, engine_params(precision, True, max_tokens=str(budget), **params),
            _max_rows(budget), target,
        )  # fmt: skip
        chosen, batch = _mix_batch(inst, pool, budget)
        prof = inst.packed[max(inst.packed)]
        with torch.inference_mode():
            logits[label] = np.array(prof.launch(batch.tokens, batch.positions, batch.lengths)())
            ms = median_ms(prof.graph.replay, 30, target) if prof.graph is not None else 0.0
        del inst
        free_engines()
    diff = float(np.abs(logits["default"] - logits["variant"]).max())
    res.add("replay", {"precision": precision, "budget": budget, "params": extra,
                       "rows": len(chosen), "graph_ms": ms,
                       "seq_per_s": len(chosen) / ms * 1e3 if ms else 0.0,
                       "max_logit_diff_vs_default": diff})  # fmt: skip
