"""gRPC and HTTP side by side on one bertserve: throughput and p99 from the real perf_analyzer.

One server serves both protocols from the same engine, so the difference between the columns
is the front end and the wire format alone. For every concurrency, the three transports
(HTTP, gRPC unary, gRPC stream) run one after another, and the whole sweep repeats
`--rounds` times; the table shows each point's median over the rounds, which keeps a busy
machine's drift from favouring whichever transport ran at a quiet moment.

    python benchmarks/grpc_vs_http.py --repo tiny=REPO [--repo bert-base=REPO] \
        [--concurrency 1,2,4,8,16] [--seq 128] [--rounds 3] [--append docs/benchmarks.md]

Each REPO is a model repository holding one model (`bertserve build`); `LABEL=REPO:MODEL`
picks one of several. Needs perf_analyzer (scripts/install_perf_analyzer.sh).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import tritonclient.http as httpclient

from bertserve.launch import ServerProcess
from bertserve.perf.analyzer import PerfAnalyzerFailed
from bertserve.perf.results import Measurement
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

TRANSPORTS = MappingProxyType(
    {
        "HTTP": ("-i", "http"),
        "gRPC": ("-i", "grpc"),
        "gRPC stream": ("-i", "grpc", "--streaming"),
    }
)


@dataclass
class Target:
    label: str
    repo: Path
    model: str


def parse_target(text: str) -> Target:
    label, _, rest = text.partition("=")
    if not rest:
        raise SystemExit(f"--repo {text!r}: expected LABEL=REPO or LABEL=REPO:MODEL")
    repo_text, _, model = rest.partition(":")
    repo = Path(repo_text)
    if not model:
        models = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
        if len(models) != 1:
            raise SystemExit(f"{repo} holds {models or 'no models'}: name one as {text}:MODEL")
        model = models[0]
    return Target(label, repo, model)


def url(server: ServerProcess, transport: str) -> str:
    return server.http_url if transport == "HTTP" else server.grpc_url


def model_inputs(server: ServerProcess, model: str) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Each input's dims without the batch dimension, and the model's config parameters."""
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        inputs = client.get_model_metadata(model)["inputs"]
        config = client.get_model_config(model)
    finally:
        client.close()
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    return {spec["name"]: spec["shape"][1:] for spec in inputs}, params


def measure(
    server: ServerProcess,
    target: Target,
    transport: str,
    concurrency: int,
    args: argparse.Namespace,
    shapes: dict[str, list[int]],
) -> Measurement | None:
    """One point; a point that found no stable windows (a busy machine) is tried once more."""
    flags = perf_analyzer_args(
        target.model,
        url(server, transport),
        concurrency=concurrency,
        window_ms=args.window_ms,
        stability=50,
        max_trials=8,
        shapes=shapes,
        seq_len=args.seq,
        extra=TRANSPORTS[transport],
    )
    try:
        return perf_analyzer_point(
            flags, timeout=900, attempts=2, label=f"{transport} c={concurrency}"
        )
    except PerfAnalyzerFailed:
        return None


def median_point(points: list[Measurement]) -> tuple[float, float] | None:
    if not points:
        return None
    return (
        statistics.median(p.throughput for p in points),
        statistics.median(p.latency_p99_us for p in points) / 1000,
    )


def run_target(target: Target, args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    with start_bertserve(target.repo, target.model, exit_timeout=60) as server:
        shapes, params = model_inputs(server, target.model)
        results: dict[tuple[str, int], list[Measurement]] = {}
        for round_ in range(args.rounds):
            for c in args.concurrency:
                for transport in TRANSPORTS:
                    point = measure(server, target, transport, c, args, shapes)
                    if point is not None:
                        results.setdefault((transport, c), []).append(point)
                        print(
                            f"  {target.label} round {round_ + 1} c={c} {transport}: "
                            f"{point.throughput:.1f}/s p99 {point.latency_p99_us / 1000:.2f} ms",
                            file=sys.stderr,
                        )
    return table(results, args.concurrency), params


def table(results: dict[tuple[str, int], list[Measurement]], levels: list[int]) -> str:
    names = list(TRANSPORTS)
    headers = ["concurrency", *(f"{n} inf/s" for n in names), *(f"{n} p99 ms" for n in names)]
    rows = []
    for c in levels:
        medians = [median_point(results.get((n, c), [])) for n in names]
        thr = [f"{m[0]:.1f}" if m else "failed" for m in medians]
        p99 = [f"{m[1]:.2f}" if m else "failed" for m in medians]
        http, grpc = medians[0], medians[1]
        ratio = f"{grpc[0] / http[0]:.2f}" if http and grpc and http[0] else "-"
        rows.append([c, *thr, *p99, ratio])
    return markdown_table([*headers, "gRPC / HTTP inf/s"], rows)


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"load average at start {load}"
    )


def versions() -> str:
    names = ("bertserve", "grpcio", "protobuf", "tritonclient", "onnxruntime", "uvloop")
    found = [f"{n} {v}" for n, v in package_versions(names).items()]
    return f"Python {platform.python_version()}, " + ", ".join([*found, perf_analyzer_version()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repo", action="append", required=True, type=parse_target, metavar="LABEL=REPO[:MODEL]"
    )
    parser.add_argument(
        "--concurrency", default="1,2,4,8,16", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--seq", type=int, default=128, help="sequence length sent")
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--append", type=Path, help="append the section to this markdown file")
    args = parser.parse_args()
    require_perf_analyzer()

    started = datetime.now(UTC)
    where = machine()
    sections = []
    for target in args.repo:
        print(f"{target.label}: {target.model} from {target.repo}", file=sys.stderr)
        t0 = time.monotonic()
        rows, params = run_target(target, args)
        weights = params.get("weights", "")
        note = (
            " (random weights: same compute as the real model, meaningless answers)"
            if weights == "random"
            else ""
        )
        sections.append(
            f"### {target.label}: `{target.model}`{note}\n\n{rows}\n\n"
            f"({time.monotonic() - t0:.0f} s)"
        )
    command = "python benchmarks/grpc_vs_http.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = "\n".join(
        [
            "## gRPC vs HTTP (`benchmarks/grpc_vs_http.py`)",
            "",
            f"- date: {started:%Y-%m-%d %H:%M} UTC",
            f"- machine: {where}",
            f"- versions: {versions()}",
            f"- command: `{command}`",
            "- method: one `bertserve serve` for both protocols; perf_analyzer sync client "
            "threads at each concurrency, `--input-data zero`, sequence length "
            f"{args.seq}, batch 1, {args.window_ms} ms windows, each point the first three "
            "windows within 50% of each other (at most 8); HTTP, gRPC and "
            "gRPC stream interleaved per concurrency; median of "
            f"{args.rounds} rounds. Inferences/s and p99 latency (ms).",
            "",
            "\n\n".join(sections),
            "",
        ]
    )
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
