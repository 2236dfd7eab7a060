"""Overload and soak: bertserve under an open-loop load above its capacity, bounded in time.

The capacity is measured first (the real perf_analyzer, closed loop); then the load runs open
loop (requests on a fixed schedule whatever the answers, benchmarks/open_loop.py) at each
multiple of it for `--seconds`, and a soak at the highest multiple for `--soak-secs`. For each
phase: requests admitted (200) and their p50/p99 latency, rejected (503: the queue's bound, or
the connection cap) and how fast the rejection came, anything else (must be 0), the server's
resident memory before, at its peak and after, and the recovery time: from the end of the load
until a probe is answered as fast as an unloaded server answers it.

    python benchmarks/overload.py [--repo REPO] [--batch 4] [--seq 256] [--multiples 2,10] \
        [--seconds 10] [--soak-secs 60] [--before REF] [--append docs/benchmarks.md]

Without --repo the tiny preset is built into a temporary folder. --before REF runs the same
overload phases (not the soak) against REF's src/ (a git ref of this checkout, e.g. the
commit before the hardening) served the same way, side by side in the same run. Loopback
only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import uvloop

from bertserve.launch import ServerProcess
from bertserve.perf.http_transport import HttpTransport
from harness import (
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
from open_loop import CLIENT_TIMEOUT, REFUSED, RssSampler, open_loop, percentile, recovery

MODEL = "bert_tiny_onnx_cpu"


@dataclass(frozen=True)
class Phase:
    """One phase's figures, as the table shows them."""

    build: str
    name: str
    offered: float  # requests/s asked for
    kept: float  # requests/s the generator managed
    sent: int
    admitted: int
    rejected: int  # 503
    refused: int  # connection refused or closed before an answer
    other: int  # any other status, and client timeouts
    admitted_p50: float
    admitted_p99: float
    rejected_p50: float
    rejected_p99: float
    rss_before: int
    rss_peak: int
    rss_after: int
    recovery: float

    def row(self) -> list[object]:
        mb = 2**20
        return [
            self.build, self.name, f"{self.offered:.0f} ({self.kept:.0f})", self.sent,
            self.admitted, self.rejected, self.refused, self.other,
            _ms(self.admitted_p50), _ms(self.admitted_p99),
            _ms(self.rejected_p50), _ms(self.rejected_p99),
            f"{self.rss_before / mb:.0f} / {self.rss_peak / mb:.0f} / {self.rss_after / mb:.0f}",
            f"{self.recovery:.2f}",
        ]  # fmt: skip


HEADERS = (
    "build", "phase", "offered req/s (kept)", "sent", "200", "503", "refused", "other",
    "200 p50 ms", "200 p99 ms", "503 p50 ms", "503 p99 ms", "RSS MB before / peak / after",
    "recovery s",
)  # fmt: skip


def _ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.1f}"  # nan: no such requests


def payload(server: ServerProcess, batch: int, seq: int) -> bytes:
    """One infer request in Triton's binary form: `batch` rows of `seq` tokens (ids that every
    vocabulary holds)."""
    inputs = {
        name: np.zeros((batch, seq), np.int64)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    inputs["attention_mask"][:] = 1
    return HttpTransport(server.http_url, MODEL, "").prepare(inputs)


def capacity(server: ServerProcess, batch: int, seq: int, window_ms: int) -> float:
    """Requests/s the server sustains closed loop (perf_analyzer at concurrency 16)."""
    shapes = {name: [-1] for name in ("input_ids", "attention_mask", "token_type_ids")}
    flags = perf_analyzer_args(
        MODEL, server.http_url, concurrency=16, window_ms=window_ms, stability=50,
        max_trials=10, shapes=shapes, seq_len=seq, batch_size=batch,
    )  # fmt: skip
    point = perf_analyzer_point(flags, batch_size=batch, attempts=3, label="capacity")
    return point.throughput / batch


async def unloaded_latency(host: str, port: int, body: bytes) -> float:
    from open_loop import probe_latency

    latencies = []
    for _ in range(20):
        status, latency = await probe_latency(host, port, body)
        if status == 200:
            latencies.append(latency)
    return statistics.median(latencies)


async def phase(
    server: ServerProcess,
    rss: RssSampler,
    build: str,
    name: str,
    rate: float,
    seconds: float,
    body: bytes,
    unloaded: float,
    timeout: float,
) -> Phase:
    host, port = server.http_url.split(":")
    before = rss.now()
    started = time.monotonic()
    outcomes, kept = await open_loop(host, int(port), body, rate, seconds, timeout)
    ended = started + seconds
    loop_end = time.monotonic()
    recovered = await recovery(host, int(port), body, unloaded)
    # recovery counts from the end of the schedule; what the load's own stragglers took is in it
    recovered += max(0.0, loop_end - ended)
    await asyncio.sleep(2)  # memory after: once the load's buffers are gone
    after = rss.now()
    ok = [o.latency for o in outcomes if o.status == 200]
    rejected = [o.latency for o in outcomes if o.status == 503]
    refused = sum(o.status == REFUSED for o in outcomes)
    other = sum(o.status not in (200, 503, REFUSED) for o in outcomes)
    timeouts = sum(o.status == CLIENT_TIMEOUT for o in outcomes)
    if timeouts:
        print(f"  {build} {name}: {timeouts} client timeouts ({timeout:g} s)", file=sys.stderr)
    return Phase(
        build, name, rate, kept, len(outcomes), len(ok), len(rejected), refused, other,
        percentile(ok, 50), percentile(ok, 99), percentile(rejected, 50),
        percentile(rejected, 99), before, rss.peak(started, time.monotonic()), after, recovered,
    )  # fmt: skip


def run_build(
    build: str, repo: Path, pythonpath: list[Path], rate: float, args: argparse.Namespace
) -> list[Phase]:
    with start_bertserve(repo, MODEL, pythonpath=pythonpath, exit_timeout=120) as server:
        rss = RssSampler(server.pid).start()
        try:
            body = payload(server, args.batch, args.seq)
            host, port = server.http_url.split(":")

            async def phases() -> list[Phase]:
                unloaded = await unloaded_latency(host, int(port), body)
                print(f"  {build}: unloaded latency {unloaded * 1000:.1f} ms", file=sys.stderr)
                done = []
                plan = [(f"{m:g}x, {args.seconds:g} s", m, args.seconds) for m in args.multiples]
                top = max(args.multiples)
                if args.soak_secs and not pythonpath:  # an earlier build: overload phases only
                    plan.append((f"soak {top:g}x, {args.soak_secs:g} s", top, args.soak_secs))
                for name, multiple, seconds in plan:
                    result = await phase(server, rss, build, name, multiple * rate, seconds,
                                         body, unloaded, args.client_timeout)  # fmt: skip
                    print("  " + " | ".join(map(str, result.row())), file=sys.stderr)
                    done.append(result)
                return done

            return uvloop.run(phases())
        finally:
            rss.stop()


def build_tiny(folder: Path) -> Path:
    from bertserve.builder import build_preset

    build_preset("tiny", folder, force=True)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help=f"a repository holding {MODEL}")
    parser.add_argument("--batch", type=int, default=4, help="rows per request")
    parser.add_argument("--seq", type=int, default=256, help="tokens per row")
    parser.add_argument(
        "--multiples", default="2,10", type=lambda s: [float(x) for x in s.split(",")]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="each overload phase")
    parser.add_argument("--soak-secs", type=float, default=60.0, help="0: no soak")
    parser.add_argument("--client-timeout", type=float, default=30.0)
    parser.add_argument("--window-ms", type=int, default=3000, help="capacity window")
    parser.add_argument("--before", metavar="REF", help="also run REF's src/ (a git ref)")
    parser.add_argument("--append", type=Path, help="append the section to this markdown file")
    args = parser.parse_args()
    require_perf_analyzer()

    started = datetime.now(UTC)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bertserve-overload-") as tmp:
        repo = args.repo or build_tiny(Path(tmp) / "repo")
        with start_bertserve(repo, MODEL) as server:
            rate = capacity(server, args.batch, args.seq, args.window_ms)
        print(f"capacity: {rate:.1f} requests/s", file=sys.stderr)
        builds: list[tuple[str, list[Path]]] = [("this", [])]
        if args.before:
            (Path(tmp) / "before").mkdir()
            source = export_src(args.before, Path(tmp) / "before")
            builds.insert(0, (f"before ({args.before})", [source]))
        phases = [p for name, path in builds for p in run_build(name, repo, path, rate, args)]
    command = "python benchmarks/overload.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    names = ("bertserve", "uvicorn", "httptools", "grpcio", "onnxruntime", "uvloop")
    versions = ", ".join(f"{n} {v}" for n, v in package_versions(names).items())
    text = "\n".join([
        "## Overload and soak (`benchmarks/overload.py`)",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}; load average at start {load}",
        f"- versions: Python {platform.python_version()}, {versions}, {perf_analyzer_version()}",
        f"- command: `{command}`",
        f"- method: `{MODEL}` (random weights), requests of {args.batch} x {args.seq} tokens "
        f"over HTTP (binary tensors), server defaults; capacity {rate:.1f} requests/s "
        "(perf_analyzer, closed loop, concurrency 16); then open loop from this process at "
        "each multiple of it (latency from each request's scheduled send; client timeout "
        f"{args.client_timeout:g} s). 503 = refused by the queue's bound or the connection cap; "
        "refused = connection closed before an answer; other = any other status or a client "
        "timeout. Recovery: from the end of the load until a probe on a fresh connection is "
        "answered within twice the unloaded latency.",
        "",
        markdown_table(HEADERS, [p.row() for p in phases], numeric=[False, False] + [True] * 12),
        "",
    ])  # fmt: skip
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
