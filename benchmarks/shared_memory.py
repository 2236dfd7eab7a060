"""Tensors in system shared memory against tensors in the requests, on one bertserve server:
what `--shared-memory system` saves, measured by the real perf_analyzer and by
`bertserve perf` side by side.

Each case (sequence length, rows per request, concurrency) is measured in rounds; within a
round the four points (two tools x two placements) run back to back, so the machine's drift
touches all alike, and the table keeps each point's median over the rounds and the ratio
shared memory / in the request per tool. The model is the tiny preset's BERT (random
weights: its speed is real, its answers are meaningless).

    python benchmarks/shared_memory.py [--rounds 3] [--window-ms 1500] [--repo DIR]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bertserve.builder import build_preset
from bertserve.launch import ServerProcess
from bertserve.perf.profiler import profile
from bertserve.perf.results import Measurement
from bertserve.perf.session import run_async
from bertserve.perf.settings import LoadRange, PerfSettings
from harness import (
    cpu_name,
    markdown_table,
    package_versions,
    perf_analyzer_args,
    perf_analyzer_point,
    perf_analyzer_version,
    require_perf_analyzer,
    start_bertserve,
)

MODEL = "bert_tiny_onnx_cpu"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Case:
    seq: int
    batch: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"seq {self.seq}, -b {self.batch}, c {self.concurrency}"


CASES = (Case(128, 1, 2), Case(128, 8, 2))
PLACEMENTS = ("none", "system")


def ours(server: ServerProcess, case: Case, placement: str, window_ms: int) -> Measurement:
    settings = PerfSettings(
        model=MODEL,
        url=server.http_url,
        batch_size=case.batch,
        concurrency=LoadRange(case.concurrency, case.concurrency, 1),
        window_ms=float(window_ms),
        max_trials=10,
        stability_percent=25.0,
        input_data="zero",
        shapes={name: (case.seq,) for name in INPUTS},
        shared_memory="system" if placement == "system" else "none",
    )
    (point,) = run_async(profile(settings)).measurements
    return point


def theirs(server: ServerProcess, case: Case, placement: str, window_ms: int) -> Measurement:
    args = perf_analyzer_args(
        MODEL,
        server.http_url,
        concurrency=case.concurrency,
        window_ms=window_ms,
        stability=25,
        max_trials=10,
        shapes={name: (-1,) for name in INPUTS},
        seq_len=case.seq,
        batch_size=case.batch,
        extra=["--shared-memory", placement],
    )
    return perf_analyzer_point(args, batch_size=case.batch, attempts=3, label=case.label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=1500)
    parser.add_argument("--repo", type=Path, help="a repository holding the tiny preset")
    args = parser.parse_args()
    require_perf_analyzer()
    with tempfile.TemporaryDirectory() as scratch:
        repo = args.repo
        if repo is None:
            repo = Path(scratch) / "repo"
            build_preset("tiny", repo, force=True)
        server = start_bertserve(repo, MODEL, args=["--allow-client-shm=true"])
        try:
            points: dict[tuple[Case, str, str], list[Measurement]] = {}
            for r in range(args.rounds):
                for case in CASES:
                    for tool, measure in (("perf_analyzer", theirs), ("bertserve perf", ours)):
                        for placement in PLACEMENTS:
                            point = measure(server, case, placement, args.window_ms)
                            points.setdefault((case, tool, placement), []).append(point)
                            print(
                                f"round {r + 1} {case.label:<22} {tool:<14} {placement:<6} "
                                f"{point.throughput:9.1f} inf/s p50 {point.latency_p50_us:7.0f} us",
                                flush=True,
                            )
        finally:
            server.stop()
    rows = []
    for case in CASES:
        for tool in ("perf_analyzer", "bertserve perf"):
            tp = {
                p: statistics.median(m.throughput for m in points[case, tool, p])
                for p in PLACEMENTS
            }
            p50 = {
                p: statistics.median(m.latency_p50_us for m in points[case, tool, p])
                for p in PLACEMENTS
            }
            rows.append(
                (
                    case.label,
                    tool,
                    f"{tp['none']:,.0f}",
                    f"{tp['system']:,.0f}",
                    f"{tp['system'] / tp['none']:.3f}",
                    f"{p50['none']:,.0f}",
                    f"{p50['system']:,.0f}",
                )
            )
    versions = package_versions(("bertserve", "onnxruntime", "tritonclient"))
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_name()} ({platform.machine()}), "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f", perf_analyzer {perf_analyzer_version()}; median of {args.rounds} rounds\n"
    )
    print(
        markdown_table(
            ("case", "client", "inf/s in request", "inf/s shared memory", "ratio",
             "p50 us in request", "p50 us shared memory"),
            rows,
            numeric=(False, False, True, True, True, True, True),
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
