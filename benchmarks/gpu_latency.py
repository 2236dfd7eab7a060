"""Where a batch-1 request's time goes on the GPU machine, in process: the kernels of one
batch-1 pass (a padded 384-token row, a packed 156-token row) and the hand-off through the
scheduler (asyncio loop -> instance thread -> loop) around the same instance."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from gpu_common import Results, Target, free_engines, load_engine, stack_rows
from gpu_engine import OUTPUTS, engine_params, full_row, kernel_profile, run_ms, typical_row

__all__ = ["kernels_b1", "scheduler_hop"]


def _profile(
    res: Results, key: str, compute: Any, replay: Any, target: Target, meta: dict[str, Any]
) -> None:
    """gpu_engine.kernel_profile of one batch-1 pass, recorded under `key` with `meta`."""
    profiled = kernel_profile(compute, replay, target, replay_reps=50, eager_reps=20, top=30)
    res.put(key, {**meta, **profiled})
    res.line(f"{key}: graph {profiled['graph_replay_ms']:.3f} ms, kernels "
             f"{profiled['kernel_ms_per_pass']:.3f} ms in {profiled['kernels_per_pass']:.0f} "
             f"kernels, eager {profiled['eager_ms']:.3f} ms")  # fmt: skip


def kernels_b1(res: Results, vdir: Path, target: Target, precisions: tuple[str, ...]) -> None:
    """The kernels of one batch-1 pass: padded on a full 384-token row (the dense graph),
    packed on one 145-token row (its token bucket)."""
    row = typical_row()
    for precision in precisions:
        _kernels_padded(res, vdir, target, precision, full_row(row))
        _kernels_packed(res, vdir, target, precision, row)


def _kernels_padded(
    res: Results, vdir: Path, target: Target, precision: str, full: dict[str, np.ndarray]
) -> None:
    import torch

    inst = load_engine(vdir, engine_params(precision, False), 256, target)
    prof = inst.profiles[(1, 384)]
    with torch.inference_mode():
        prof.launch(full["input_ids"], None, full["token_type_ids"])()
    _profile(res, f"b1 kernels padded {precision} 384", functools.partial(prof.compute, True),
             functools.partial(prof.replay, True), target, {"tokens": 384})  # fmt: skip
    del inst, prof
    free_engines()


def _kernels_packed(
    res: Results, vdir: Path, target: Target, precision: str, row: dict[str, np.ndarray]
) -> None:
    import torch

    from bertserve.backends.packing import pack

    inst = load_engine(vdir, engine_params(precision, True), 256, target)
    batch = pack([stack_rows([row])], inst.packing)
    pk = next(p for t, p in sorted(inst.packed.items()) if t >= batch.total_tokens)
    with torch.inference_mode():
        pk.launch(batch.tokens, batch.positions, batch.lengths)()
    meta = {"tokens": int(batch.total_tokens), "bucket": pk.tokens}
    _profile(res, f"b1 kernels packed {precision} {batch.total_tokens}", pk.compute,
             pk._replay, target, meta)  # fmt: skip
    del inst, pk
    free_engines()


def scheduler_hop(res: Results, vdir: Path, target: Target, reps: int = 400) -> None:
    """Batch-1 requests one at a time through the server's Scheduler (submit on an asyncio
    loop, the batch on an instance thread, the result back on the loop) against `run()` on
    the same instance: what the hand-offs add, without HTTP. Medians of each request's
    stretches: queue (submit to a batch formed), input, infer (launch and wait), output, and
    back to the loop (the batch's results to the awaiting coroutine)."""
    row = typical_row()
    for label, packed, x in (
        ("padded fp16 384", False, full_row(row)),
        ("packed fp16 own", True, stack_rows([row])),
    ):
        inst = load_engine(vdir, engine_params("fp16", packed), 256, target)
        run_times = run_ms(inst, x, reps, warmup=20)
        try:
            import uvloop

            hop, parts = uvloop.run(_through_scheduler(inst, x, reps))
        except ImportError:
            hop, parts = asyncio.run(_through_scheduler(inst, x, reps))
        a, b = float(np.median(run_times)), float(np.median(hop))
        names = ("queue", "input", "infer", "output", "back_to_loop")
        medians = {n: float(np.median([p[k] for p in parts])) / 1e3 for k, n in enumerate(names)}
        res.add("hop", {"engine": label, "run_p50_ms": a, "scheduler_p50_ms": b,
                        "scheduler_p99_ms": float(np.percentile(hop, 99)),
                        "median_us": medians})  # fmt: skip
        res.line(f"scheduler hop {label:18s} run() p50 {a:.3f} ms, through the scheduler "
                 f"{b:.3f} ms (+{(b - a) * 1e3:.0f} us); medians us "
                 + " ".join(f"{n} {v:.0f}" for n, v in medians.items()))  # fmt: skip
        del inst
        free_engines()


async def _through_scheduler(
    inst: Any, x: dict[str, np.ndarray], reps: int
) -> tuple[list[float], list[tuple[int, ...]]]:
    from tritonclient.grpc import model_config_pb2

    from bertserve.batching.policy import BatchingPolicy
    from bertserve.batching.scheduler import Scheduler
    from bertserve.stats import ModelStats, RequestTiming

    config = model_config_pb2.ModelConfig(max_batch_size=256)
    config.dynamic_batching.SetInParent()
    sched = Scheduler("m", BatchingPolicy.from_config(config), [inst], ModelStats("m", "1"))
    sched.start()
    times: list[float] = []
    parts: list[tuple[int, ...]] = []
    try:
        for i in range(reps + 20):
            t = time.perf_counter()
            timing = RequestTiming(time.perf_counter_ns())
            await sched.submit(dict(x), list(OUTPUTS), 1, timing)
            end = time.perf_counter_ns()
            if i >= 20:
                times.append((time.perf_counter() - t) * 1e3)
                parts.append((timing.dispatch - timing.arrival,
                              timing.input_done - timing.dispatch,
                              timing.infer_done - timing.input_done,
                              timing.output_done - timing.infer_done,
                              end - timing.output_done))  # fmt: skip
    finally:
        await sched.stop()
    return times, parts
