"""What the hardening costs: this build and the code before it, side by side in one run.

Both builds serve the same repository at once (the earlier one from `git archive REF src`,
run through bertserve.launch with that src/ first on PYTHONPATH, both with their own
defaults), and the real perf_analyzer measures them alternately: for every round,
concurrency and protocol, one build then the other, the order flipping every round, so that
a busy machine's drift falls on both alike. The table shows each build's median over the
rounds, this build's throughput as a share of the earlier one's and the spread of that share
over the rounds; and, since a machine shared with other work makes throughput noisy, the CPU
each server spent per request it served (its process tree's user + system time over the
point, divided by the requests its statistics counted): a CPU-bound server's capacity goes
as the inverse, so `before / this` CPU is the capacity this build keeps.

    python benchmarks/hardening_cost.py --before REF [--repo REPO] [--concurrency 1,8] \
        [--protocols http,grpc] [--rounds 5] [--append docs/benchmarks.md]

Without --repo the tiny preset is built into a temporary folder (by this build, so the model
carries its tables' sizes and this build checks them; the earlier build ignores them).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import orjson

from bertserve.launch import ServerProcess
from bertserve.perf.analyzer import PerfAnalyzerFailed
from bertserve.perf.results import Measurement
from harness import (
    ROOT,
    cpu_name,
    export_src,
    markdown_table,
    package_versions,
    perf_analyzer_args,
    perf_analyzer_point,
    perf_analyzer_version,
    require_perf_analyzer,
    start_bertserve,
)
from server_points import tree_cpu_seconds

MODEL = "bert_tiny_onnx_cpu"
SHAPES = MappingProxyType(
    {name: (-1,) for name in ("input_ids", "attention_mask", "token_type_ids")}
)
#: The most this build may cost, as a share of the earlier build's throughput.
BUDGET = 0.03


@dataclass(frozen=True)
class Point:
    measured: Measurement
    cpu_us: float  # the server's CPU per request served, in microseconds


def served(server: ServerProcess) -> int:
    url = f"http://{server.http_url}/v2/models/{MODEL}/stats"
    with urllib.request.urlopen(url, timeout=30) as answer:
        stats = orjson.loads(answer.read())["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def point(server: ServerProcess, protocol: str, concurrency: int, args: argparse.Namespace
          ) -> Point | None:  # fmt: skip
    address = server.http_url if protocol == "http" else server.grpc_url
    flags = perf_analyzer_args(
        MODEL, address, concurrency=concurrency, window_ms=args.window_ms, stability=50,
        max_trials=8, shapes=SHAPES, seq_len=args.seq, extra=("-i", protocol),
    )  # fmt: skip
    cpu, count = tree_cpu_seconds(server.pid), served(server)
    try:
        measured = perf_analyzer_point(flags, attempts=2, label=f"{protocol} c={concurrency}")
    except PerfAnalyzerFailed:
        return None
    requests = served(server) - count
    return Point(measured, 1e6 * (tree_cpu_seconds(server.pid) - cpu) / max(requests, 1))


def commit_of(ref: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True
    )
    return done.stdout.strip() or ref


def measure(args: argparse.Namespace, repo: Path, before: Path) -> str:
    results: dict[tuple[str, str, int], list[Point]] = {}
    with (
        start_bertserve(repo, MODEL, pythonpath=[before]) as earlier,
        start_bertserve(repo, MODEL) as this,
    ):
        builds = {"before": earlier, "this": this}
        for round_ in range(args.rounds):
            for c in args.concurrency:
                for protocol in args.protocols:
                    order = list(builds) if round_ % 2 == 0 else list(builds)[::-1]
                    found = {n: point(builds[n], protocol, c, args) for n in order}
                    if any(f is None for f in found.values()):
                        continue  # a pair is kept whole or not at all
                    for name, got in found.items():
                        assert got is not None
                        results.setdefault((name, protocol, c), []).append(got)
                        print(f"  round {round_ + 1} {protocol} c={c} {name}: "
                              f"{got.measured.throughput:.1f}/s, {got.cpu_us:.0f} us CPU/request",
                              file=sys.stderr)  # fmt: skip
    rows = []
    for protocol in args.protocols:
        for c in args.concurrency:
            old = results.get(("before", protocol, c), [])
            new = results.get(("this", protocol, c), [])
            if not old or not new:
                rows.append([protocol, c, *["failed"] * 7])
                continue
            old_t = statistics.median(p.measured.throughput for p in old)
            new_t = statistics.median(p.measured.throughput for p in new)
            shares = [n.measured.throughput / o.measured.throughput
                      for o, n in zip(old, new, strict=True)]  # fmt: skip
            old_cpu = statistics.median(p.cpu_us for p in old)
            new_cpu = statistics.median(p.cpu_us for p in new)
            rows.append([
                protocol, c, f"{old_t:.1f}", f"{new_t:.1f}", f"{new_t / old_t:.3f}",
                f"{min(shares):.3f} .. {max(shares):.3f}", f"{old_cpu:.0f}", f"{new_cpu:.0f}",
                f"{old_cpu / new_cpu:.3f}",
            ])  # fmt: skip
    headers = [
        "protocol", "concurrency", "before inf/s", "this inf/s", "this / before",
        "per round", "before CPU us/req", "this CPU us/req", "capacity kept (CPU)",
    ]  # fmt: skip
    return markdown_table(headers, rows, numeric=[False] + [True] * 8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, metavar="REF", help="the earlier build")
    parser.add_argument("--repo", type=Path, help=f"a repository holding {MODEL}")
    parser.add_argument(
        "--concurrency", default="1,8", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--protocols", default="http,grpc", type=lambda s: s.split(","))
    parser.add_argument("--seq", type=int, default=128, help="sequence length sent")
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--append", type=Path, help="append the section to this markdown file")
    args = parser.parse_args()
    require_perf_analyzer()

    started = datetime.now(UTC)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bertserve-cost-") as tmp:
        if args.repo is None:
            from bertserve.builder import build_preset

            args.repo = Path(tmp) / "repo"
            build_preset("tiny", args.repo, force=True)
        (Path(tmp) / "before").mkdir()
        table = measure(args, args.repo, export_src(args.before, Path(tmp) / "before"))
    load_after = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python benchmarks/hardening_cost.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    names = ("bertserve", "uvicorn", "httptools", "grpcio", "onnxruntime", "uvloop", "numpy")
    versions = ", ".join(f"{n} {v}" for n, v in package_versions(names).items())
    text = "\n".join([
        "## The cost of hardening (`benchmarks/hardening_cost.py`)",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}; load average {load} at start, {load_after} at the end",
        f"- versions: Python {platform.python_version()}, {versions}, {perf_analyzer_version()}",
        f"- command: `{command}`",
        f"- method: before = `{args.before}` ({commit_of(args.before)}), this = the checkout's "
        f"own build; both serve `{MODEL}` (random weights) with their defaults at once; "
        f"perf_analyzer sync clients, `--input-data zero`, batch 1, sequence length {args.seq}, "
        f"{args.window_ms} ms windows, each point the first three windows within 50% of each "
        f"other; the builds alternate point by point, the order flipped each round; medians of "
        f"{args.rounds} rounds. CPU per request: the server "
        "process's user + system time over each point (all of perf_analyzer's windows) over "
        "the requests its statistics counted. Budget: at least "
        f"{1 - BUDGET:.2f} of the earlier build's capacity.",
        "",
        table,
        "",
    ])  # fmt: skip
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
