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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import tritonclient.http as httpclient

from bertserve.announce import READY_LINE, parse_started
from bertserve.perf.analyzer import PerfAnalyzerFailed, find_perf_analyzer, profile
from bertserve.perf.results import Measurement

TRANSPORTS = {
    "HTTP": ["-i", "http"],
    "gRPC": ["-i", "grpc"],
    "gRPC stream": ["-i", "grpc", "--streaming"],
}


@dataclass
class Target:
    label: str
    repo: Path
    model: str


@dataclass
class Server:
    proc: subprocess.Popen[str]
    ports: dict[str, int] = field(default_factory=dict)

    def url(self, transport: str) -> str:
        kind = "http" if transport == "HTTP" else "grpc"
        return f"127.0.0.1:{self.ports[kind]}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


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


def start_server(target: Target) -> Server:
    command = [
        sys.executable,
        "-m",
        "bertserve",
        "serve",
        "--model-repository",
        str(target.repo),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    server = Server(proc)
    assert proc.stdout is not None
    for line in proc.stdout:
        started = parse_started(line)
        if started is not None:
            server.ports[started[0]] = started[2]
        if READY_LINE in line:
            return server
    raise SystemExit(f"bertserve exited before it was ready ({' '.join(command)})")


def shape_args(server: Server, model: str, seq: int) -> tuple[list[str], dict[str, str]]:
    """--shape for every input (variable dims -> seq), and the model's config parameters."""
    client = httpclient.InferenceServerClient(server.url("HTTP"))
    try:
        inputs = client.get_model_metadata(model)["inputs"]
        config = client.get_model_config(model)
    finally:
        client.close()
    args = []
    for spec in inputs:
        dims = [seq if d < 0 else d for d in spec["shape"][1:]]
        args += ["--shape", f"{spec['name']}:{','.join(map(str, dims))}"]
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    return args, params


def measure(
    server: Server, target: Target, transport: str, concurrency: int, common: list[str]
) -> Measurement | None:
    """One point; a point that found no stable windows (a busy machine) is tried once more."""
    args = [
        "-m",
        target.model,
        "-u",
        server.url(transport),
        *TRANSPORTS[transport],
        "--concurrency-range",
        str(concurrency),
        *common,
    ]
    for attempt in (1, 2):
        try:
            (point,) = profile(args, timeout=900)
            return point
        except PerfAnalyzerFailed as exc:
            last = str(exc).splitlines()[-1]
            print(f"  {transport} c={concurrency} attempt {attempt}: {last}", file=sys.stderr)
    return None


def median_point(points: list[Measurement]) -> tuple[float, float] | None:
    if not points:
        return None
    return (
        statistics.median(p.throughput for p in points),
        statistics.median(p.latency_p99_us for p in points) / 1000,
    )


def run_target(target: Target, args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    server = start_server(target)
    try:
        shapes, params = shape_args(server, target.model, args.seq)
        common = [
            "--input-data",
            "zero",
            *shapes,
            "--measurement-interval",
            str(args.window_ms),
            "--stability-percentage",
            "50",
            "--max-trials",
            "8",
        ]
        results: dict[tuple[str, int], list[Measurement]] = {}
        for round_ in range(args.rounds):
            for c in args.concurrency:
                for transport in TRANSPORTS:
                    point = measure(server, target, transport, c, common)
                    if point is not None:
                        results.setdefault((transport, c), []).append(point)
                        print(
                            f"  {target.label} round {round_ + 1} c={c} {transport}: "
                            f"{point.throughput:.1f}/s p99 {point.latency_p99_us / 1000:.2f} ms",
                            file=sys.stderr,
                        )
    finally:
        server.stop()
    return table(results, args.concurrency), params


def table(results: dict[tuple[str, int], list[Measurement]], levels: list[int]) -> str:
    names = list(TRANSPORTS)
    head = (
        "| concurrency | "
        + " | ".join(f"{n} inf/s" for n in names)
        + " | "
        + " | ".join(f"{n} p99 ms" for n in names)
        + " | gRPC / HTTP inf/s |"
    )
    lines = [head, "|" + "---:|" * (2 * len(names) + 2)]
    for c in levels:
        medians = [median_point(results.get((n, c), [])) for n in names]
        thr = [f"{m[0]:.1f}" if m else "failed" for m in medians]
        p99 = [f"{m[1]:.2f}" if m else "failed" for m in medians]
        http, grpc = medians[0], medians[1]
        ratio = f"{grpc[0] / http[0]:.2f}" if http and grpc and http[0] else "-"
        lines.append(f"| {c} | " + " | ".join(thr + p99) + f" | {ratio} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"load average at start {load}"
    )


def versions() -> str:
    names = ("bertserve", "grpcio", "protobuf", "tritonclient", "onnxruntime", "uvloop")
    found = [f"{n} {metadata.version(n)}" for n in names]
    command = find_perf_analyzer() or []
    wheels = sorted(
        Path(command[0])
        .resolve()
        .parents[1]
        .glob("lib/python*/site-packages/tritonclient-*.dist-info")
    )
    if wheels:
        found.append(f"perf_analyzer from the {wheels[-1].name.removesuffix('.dist-info')} wheel")
    return f"Python {platform.python_version()}, " + ", ".join(found)


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
    if find_perf_analyzer() is None:
        raise SystemExit("perf_analyzer not found: run scripts/install_perf_analyzer.sh")

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
