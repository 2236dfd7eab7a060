"""A batch-1 pass launched on one thread and waited for on another, as the scheduler hands
batches between the event loop and an instance thread: what the hand-off adds to `run()` on
one thread, by what each thread does meanwhile. Each figure is the median time from the
launch to the waiting thread's return, a pause of 0.3 ms between passes (an idle server's
gaps)."""

from __future__ import annotations

import functools
import os
import select
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpu_common import Results, Target, free_engines, load_engine, stack_rows
from gpu_engine import OUTPUTS, engine_params, full_row, run_ms, typical_row

__all__ = ["handoff"]

#: (label, the waiting thread spins instead of blocking until handed the pass, the launching
#: thread spins instead of blocking until the pass is back, a stream query after the launch)
CASES = (
    ("both block (the scheduler at idle)", False, False, False),
    ("both block, a stream query after the launch", False, False, True),
    ("the waiting thread spins before the hand-off", True, False, False),
    ("the launching thread spins until the pass is back", False, True, False),
)


def handoff(res: Results, vdir: Path, target: Target, reps: int = 300, rounds: int = 2) -> None:
    row = typical_row()
    for label, packed, x in (("padded fp16 384", False, full_row(row)),
                             ("packed fp16 own", True, stack_rows([row]))):  # fmt: skip
        inst = load_engine(vdir, engine_params("fp16", packed), 256, target)
        run_us = round(statistics.median(run_ms(inst, x, reps, warmup=20)) * 1e3)
        record: dict[str, Any] = {"engine": label, "run_us": run_us}
        for _ in range(rounds):
            for case, waiter_spins, launcher_spins, query in CASES:
                flush = inst.stream.query if query and inst.stream is not None else None
                launch = functools.partial(inst.launch, x, list(OUTPUTS))
                us = _across(launch, flush, waiter_spins, launcher_spins, reps)
                record.setdefault(case, []).append(us)
        res.add("handoff", record)
        res.line(f"hand-off {label}: run() {record['run_us']} us; "
                 + "; ".join(f"{c} {record[c]}" for c, *_ in CASES))  # fmt: skip
        del inst, launch, flush
        free_engines()


def _across(
    launch: Callable[[], Callable[[], Any]],
    flush: Callable[[], Any] | None,
    waiter_spins: bool,
    launcher_spins: bool,
    reps: int,
) -> int:
    """Median microseconds from a launch on this thread to the return of its wait on another;
    the waiting thread says so through a pipe (as a thread wakes an event loop)."""
    box: dict[str, Any] = {}
    go, done, stop = threading.Event(), threading.Event(), threading.Event()
    rfd, wfd = os.pipe()

    def waiter() -> None:
        while True:
            if waiter_spins:
                while not go.is_set():
                    time.sleep(0)
            else:
                go.wait()
            go.clear()
            if stop.is_set():
                return
            box["wait"]()
            box["back"] = time.perf_counter()
            done.set()
            os.write(wfd, b"x")

    thread = threading.Thread(target=waiter)
    thread.start()
    times = []
    try:
        for _ in range(reps + 20):
            t = time.perf_counter()
            box["wait"] = launch()
            if flush is not None:
                flush()
            go.set()
            if launcher_spins:
                while not done.is_set():
                    time.sleep(0)
            select.select([rfd], [], [])
            os.read(rfd, 1)
            done.clear()
            times.append(box["back"] - t)
            time.sleep(0.0003)
    finally:
        stop.set()
        go.set()
        thread.join()
        os.close(rfd)
        os.close(wfd)
    return _p50(times)


def _p50(seconds: list[float]) -> int:
    return round(statistics.median(np.asarray(seconds[20:])) * 1e6)
