"""Speed of the CPU variants `bertserve build` writes, measured in-process with ONNX Runtime.

For every CPU model of a repository (default: the `seed` preset's CPU models, built here with
random weights, which cost exactly what the real ones do), run batches of 1, 4 and 8 at
sequence lengths 128 and 384 with as many intra-op threads as cores, and print a markdown
table of sequences/s and latency percentiles. `--append docs/benchmarks.md` adds the table
with the machine, versions and date; `--json FILE` keeps every point as bertserve `Run`
records.

    python benchmarks/cpu_variants.py              # builds the seed CPU models in a temp dir
    python benchmarks/cpu_variants.py --repository models --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bertserve.perf.results import Measurement, Run
from harness import cpu_name, markdown_table

SEED_CPU_MODELS = (
    "bert_base_onnx_cpu",
    "bert_base_onnx_cpu_int8",
    "bert_distill_onnx_cpu",
    "bert_distill_onnx_cpu_int8",
)


@dataclass(frozen=True)
class CpuModel:
    name: str
    path: Path
    precision: str
    random_weights: bool


@dataclass(frozen=True)
class Point:
    model: CpuModel
    seq_len: int
    batch: int
    measurement: Measurement


def discover(repository: Path, names: list[str] | None) -> list[CpuModel]:
    """CPU ONNX models of the repository, read from their config.pbtxt."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    models = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        if config.platform != "onnxruntime_onnx" or (names and config.name not in names):
            continue
        params = {k: v.string_value for k, v in config.parameters.items()}
        models.append(
            CpuModel(
                name=config.name,
                path=config_path.parent / "1" / "model.onnx",
                precision=params.get("precision", "fp32"),
                random_weights=params.get("weights") == "random",
            )
        )
    return models


def open_session(model: CpuModel, threads: int, spin: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle worker threads of one session would otherwise spin while the next model runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])


def feeds(session: Any, seq_len: int, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    segment = (np.arange(seq_len) >= seq_len // 4).astype(np.int64)
    arrays = {
        # Ids valid in any vocabulary (even the tiny preset's); cost does not depend on them.
        "input_ids": rng.integers(104, 1000, (batch, seq_len), dtype=np.int64),
        "attention_mask": np.ones((batch, seq_len), dtype=np.int64),
        "token_type_ids": np.repeat(segment[None], batch, axis=0),
    }
    return {i.name: arrays[i.name] for i in session.get_inputs()}


def measure_point(
    models: list[CpuModel], sessions: list[Any], seq_len: int, batch: int, seconds: float
) -> list[Point]:
    """Run the models in turn, round after round, so that load from other processes falls on
    every model alike and their ratios stay fair."""
    inputs = [feeds(s, seq_len, batch) for s in sessions]
    for session, feed in zip(sessions, inputs, strict=True):
        session.run(None, feed)  # warm-up: allocations, kernel selection
    latencies: list[list[float]] = [[] for _ in models]
    start = time.perf_counter()
    while len(latencies[0]) < 3 or time.perf_counter() - start < seconds * len(models):
        for i, (session, feed) in enumerate(zip(sessions, inputs, strict=True)):
            t0 = time.perf_counter()
            session.run(None, feed)
            latencies[i].append(time.perf_counter() - t0)
    points = []
    for model, runs_s in zip(models, latencies, strict=True):
        us = np.array(runs_s) * 1e6
        measurement = Measurement(
            concurrency=1,
            batch_size=batch,
            throughput=batch * len(runs_s) / sum(runs_s),
            latency_avg_us=float(us.mean()),
            latency_p50_us=float(np.percentile(us, 50)),
            latency_p90_us=float(np.percentile(us, 90)),
            latency_p95_us=float(np.percentile(us, 95)),
            latency_p99_us=float(np.percentile(us, 99)),
            request_count=len(runs_s),
            extras={"best_latency_us": float(us.min())},
        )
        points.append(Point(model, seq_len, batch, measurement))
    return points


def _best(p: Point) -> float:
    """Sequences/s of the fastest run: the least disturbed by other processes."""
    return p.batch / (p.measurement.extras["best_latency_us"] / 1e6)


@dataclass(frozen=True)
class Setup:
    """How the points were measured, for the table's header."""

    threads: int
    spin: bool
    seconds: float
    date: str
    load: tuple[float, float]


def markdown(points: list[Point], setup: Setup) -> str:
    import onnxruntime as ort

    random = all(p.model.random_weights for p in points)
    fp32 = {
        (p.model.name, p.seq_len, p.batch): (p.measurement.throughput, _best(p))
        for p in points
        if p.model.precision == "fp32"
    }
    lines = [
        f"## CPU variants, ONNX Runtime in-process ({setup.date[:10]})",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {setup.threads} intra-op threads "
        f"({'spinning' if setup.spin else 'not spinning'} when idle); "
        f"onnxruntime {ort.__version__}, numpy {np.__version__}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}. "
        "Measured by `benchmarks/cpu_variants.py`: one session per model, one request at a "
        "time, full-length sequences; at each point the models run in turn, round after round "
        f"(>= {setup.seconds:g} s per model after a warm-up run), so outside load falls on all "
        "alike. "
        "seq/s = batch x runs / time; best-run seq/s = batch / fastest run. "
        f"1-minute load average {setup.load[0]:.1f} before, {setup.load[1]:.1f} after: other "
        "processes "
        "sharing the cores lower these numbers.",
        "",
    ]
    if random:
        lines += [
            "Weights are random (seeded, `--weights random`): the architecture is exact, so "
            "the cost is the same as the real checkpoints; answers are meaningless.",
            "",
        ]
    rows = []
    for p in points:
        m = p.measurement
        base_name = p.model.name.removesuffix("_int8").removesuffix("_fp16")
        base = fp32.get((base_name, p.seq_len, p.batch))
        ratio = f"{m.throughput / base[0]:.2f}x" if base else "-"
        best_ratio = f"{_best(p) / base[1]:.2f}x" if base else "-"
        rows.append(
            (p.model.name, p.model.precision, p.seq_len, p.batch, f"{m.throughput:.2f}")
            + (f"{_best(p):.2f}", f"{m.latency_p50_us / 1e3:.1f}", f"{m.latency_p90_us / 1e3:.1f}")
            + (ratio, best_ratio)
        )
    headers = ("model", "precision", "seq", "batch", "seq/s", "best-run seq/s", "p50 ms")
    headers += ("p90 ms", "vs fp32", "vs fp32, best runs")
    lines.append(markdown_table(headers, rows, numeric=(False, False) + (True,) * 8))
    return "\n".join(lines) + "\n"


def runs(points: list[Point], threads: int, date: str) -> list[Run]:
    return [
        Run(
            label=f"{p.model.name} seq {p.seq_len} batch {p.batch}",
            model=p.model.name,
            batch_size=p.batch,
            tool="benchmarks/cpu_variants.py (onnxruntime in-process)",
            random_weights=p.model.random_weights,
            notes=f"seq_len={p.seq_len} threads={threads}",
            date=date,
            measurements=(p.measurement,),
        )
        for p in points
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, help="built repository (default: build one)")
    parser.add_argument("--models", nargs="+", help="model names (default: every CPU model)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[128, 384])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per point")
    parser.add_argument(
        "--spin", action="store_true", help="let idle ONNX Runtime threads spin (its default)"
    )
    parser.add_argument("--append", type=Path, help="markdown file to append the table to")
    parser.add_argument("--json", type=Path, help="write the points as bertserve Run records")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bertserve-bench-") as tmp:
        repository = args.repository
        if repository is None:
            from bertserve.builder import build_preset

            repository = Path(tmp)
            outcome = build_preset("seed", repository, weights="random", only=SEED_CPU_MODELS)
            print(outcome.summary(), flush=True)
        models = discover(repository, args.models)
        if not models:
            print(f"No CPU ONNX models in {repository}: build some with `bertserve build`.")
            return 1
        sessions = [open_session(m, args.threads, args.spin) for m in models]
        points: list[Point] = []
        for seq_len in args.seq_lens:
            for batch in args.batch_sizes:
                for point in measure_point(models, sessions, seq_len, batch, args.seconds):
                    m = point.measurement
                    print(
                        f"{point.model.name:<28} seq {seq_len:>3} batch {batch}: "
                        f"{m.throughput:7.2f} seq/s  p50 {m.latency_p50_us / 1e3:8.1f} ms",
                        flush=True,
                    )
                    points.append(point)
        points.sort(key=lambda p: (p.model.name, p.seq_len, p.batch))
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load = (load_before, os.getloadavg()[0])
    table = markdown(points, Setup(args.threads, args.spin, args.seconds, date, load))
    print(table)
    if args.append:
        existing = args.append.read_text() if args.append.exists() else "# Benchmarks\n"
        args.append.write_text(existing.rstrip("\n") + "\n\n" + table)
    if args.json:
        args.json.write_text(
            json.dumps([r.to_dict() for r in runs(points, args.threads, date)], indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
