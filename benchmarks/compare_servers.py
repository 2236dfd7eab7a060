"""Serve one ONNX model from bertserve, PyTriton and MLServer, and measure them in one run.

bertserve and PyTriton (a real tritonserver in front of a Python function running ONNX
Runtime) speak Triton's protocol, so the real perf_analyzer drives both over HTTP with the
same settings. MLServer offers neither Triton's binary-tensor extension nor the model-config
endpoint that perf_analyzer needs, so a small asyncio client sending V2 JSON drives it; that
client also measures the other two, so the MLServer rows have something to compare with.
Every model runs with the batching its config.pbtxt gives (max_batch_size, queue delay,
preferred sizes) and ONNX Runtime with the same session options bertserve uses.

PyTriton and MLServer live in their own venvs (their pins conflict with ours); this program
runs serve_pytriton.py and serve_mlserver.py with their interpreters:

    python3 -m venv .venv-bench-pytriton && .venv-bench-pytriton/bin/pip install \
        nvidia-pytriton onnxruntime numpy
    python3 -m venv .venv-bench-mlserver && .venv-bench-mlserver/bin/pip install \
        mlserver onnxruntime numpy 'uvloop<0.22'

(uvloop 0.22+ no longer makes a loop in get_event_loop(), which MLServer 1.7's worker
processes call: with a newer uvloop its parallel workers die at start.)

Run from the main venv (it needs perf_analyzer: scripts/install_perf_analyzer.sh):

    python benchmarks/compare_servers.py --repo tiny=REPO_DIR --repo bert-base=REPO_DIR

Each REPO_DIR is a Triton model repository holding one model (`bertserve build`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bertserve.launch import LaunchError
from harness import (
    ROOT,
    cpu_name,
    package_versions,
    perf_analyzer_version,
    require_perf_analyzer,
    start_bertserve,
    start_program,
)
from model_spec import SERVICES, ModelSpec, load_spec, server_command
from server_points import (
    Row,
    Served,
    in_process_throughput,
    measure_json,
    measure_perf_analyzer,
)
from server_table import median_rows, print_ratios, print_rows, ratios

SERVERS = ("bertserve", "pytriton", "mlserver")
#: The venv of each other server, and the distribution whose version the results record.
VENVS = MappingProxyType(
    {
        "pytriton": (ROOT / ".venv-bench-pytriton", "nvidia-pytriton"),
        "mlserver": (ROOT / ".venv-bench-mlserver", "mlserver"),
    }
)
HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, spec: ModelSpec, log_dir: Path, bertserve_args: list[str]) -> Served:
    """`kind` serving `spec` on loopback, ready; raises LaunchError when it does not start."""
    log = log_dir / f"{kind}-{spec.label}.log"
    if kind == "bertserve":
        server = start_bertserve(Path(spec.repo), spec.name, args=bertserve_args, log=log)
        return Served(kind, spec, server, server.http_url)
    venv, _ = VENVS[kind]
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} missing: see this program's docstring")
    # These programs take the ports they are given (they announce none of their own).
    ports = {service: _free_port() for service in SERVICES}
    url = f"127.0.0.1:{ports['http']}"
    command = server_command(HERE / f"serve_{kind}.py", python, spec, ports)
    process = start_program(command, name=kind, address=url, model=spec.name, log=log)
    return Served(kind, spec, process, url)


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    out = package_versions(["bertserve", "onnxruntime"])
    for venv, package in VENVS.values():
        probe = f"from importlib.metadata import version; print(version('{package}'))"
        python = venv / "bin" / "python"
        if python.exists():
            done = subprocess.run(
                [str(python), "-c", probe], capture_output=True, text=True, check=False
            )
            out[package] = done.stdout.strip() or "?"
    out["perf_analyzer"] = perf_analyzer_version()
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--repo",
        action="append",
        required=True,
        metavar="LABEL=DIR",
        help="a model repository holding one model; repeat for several",
    )
    p.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated subset of %(default)s"
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat the sweep; report the median")
    p.add_argument("--concurrency", default="1,2,4,8,16", help="levels, comma-separated")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (variable dims)")
    p.add_argument(
        "--window-ms", type=int, default=2000, help="perf_analyzer -p; json client window"
    )
    p.add_argument("--stability", type=int, default=10, help="perf_analyzer -s (percent)")
    p.add_argument("--max-trials", type=int, default=10, help="perf_analyzer -r")
    p.add_argument(
        "--json-client",
        choices=("all", "mlserver"),
        default="all",
        help="which servers the asyncio JSON client also measures",
    )
    p.add_argument(
        "--bertserve-args", default="", help="extra `bertserve serve` flags (one string)"
    )
    p.add_argument("--output", type=Path, default=None, help="JSON results file")
    return p.parse_args(argv)


def sweep(
    spec: ModelSpec,
    servers: list[str],
    levels: list[int],
    opts: argparse.Namespace,
    log_dir: Path,
    in_process: dict[int, list[tuple[float, str]]],
) -> list[Row]:
    """Every server on `spec` at every level, `opts.rounds` times; in-process ORT once per
    batch size a round, in the same rotation."""
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        running: list[Served] = []
        for kind in servers:  # all up at once (idle, each takes < 1% CPU) ...
            try:
                served = start(kind, spec, log_dir, shlex.split(opts.bertserve_args))
            except LaunchError as exc:
                print(f"{kind} on {spec.label}: {exc}", flush=True)
                rows.append(Row(kind, spec.label, "-", 0, None, None, None, None, error=str(exc)))
                continue
            running.append(served)
            stack.enter_context(served.process)
        # ... so that each load level measures every server in turn, in an order that
        # rotates, and whatever else loads the machine falls on all of them alike.
        for round_ in range(opts.rounds):
            for i, c in enumerate(levels):
                shift = (i + round_) % max(len(running), 1)
                for served in running[shift:] + running[:shift]:
                    if served.kind != "mlserver":
                        rows.append(measure_perf_analyzer(served, c, opts))
                        print_rows(rows[-1:], header=False)
                    if served.kind == "mlserver" or opts.json_client == "all":
                        rows.append(measure_json(served, c, opts))
                        print_rows(rows[-1:], header=False)
                batch = min(c, spec.max_batch_size or 1)
                runs = in_process[batch]
                if len(runs) <= round_:
                    runs.append(in_process_throughput(spec, batch, opts))
                    rate, how = runs[-1]
                    print(f"ORT in-process {spec.label} batch {batch}: {rate:,.1f} inf/s "
                          f"({how})", flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # Stop the servers on SIGTERM too (SystemExit unwinds the ExitStack that holds them).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    servers = [s for s in opts.servers.split(",") if s]
    if set(servers) - {"mlserver"}:  # perf_analyzer drives every Triton-protocol server
        require_perf_analyzer()
    levels = [int(c) for c in opts.concurrency.split(",")]
    specs = [
        load_spec(label, Path(d).resolve()) for label, _, d in (r.partition("=") for r in opts.repo)
    ]
    log_dir = Path(tempfile.mkdtemp(prefix="compare-servers-"))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    print(
        f"logs: {log_dir}; seq_len {opts.seq_len}; perf_analyzer -p {opts.window_ms} "
        f"-s {opts.stability} -r {opts.max_trials} --input-data zero; HTTP on 127.0.0.1",
        flush=True,
    )
    for spec in specs:
        weights = "RANDOM weights (speed only)" if spec.random_weights else "weights as built"
        print(
            f"model {spec.label}: {spec.name} max_batch_size {spec.max_batch_size}, "
            f"queue delay {spec.delay_us} us, preferred {spec.preferred or '-'}, "
            f"{spec.instances} instance(s), ORT intra-op threads {spec.intra_op_threads}, "
            f"spinning {spec.allow_spinning}, "
            f"{weights}",
            flush=True,
        )

    # In-process ORT, by model label and batch size: (inferences/s, how) once a round.
    in_process: dict[str, dict[int, list[tuple[float, str]]]] = {}
    every: list[Row] = []
    for spec in specs:
        in_process[spec.label] = defaultdict(list)
        every += sweep(spec, servers, levels, opts, log_dir, in_process[spec.label])

    rows = median_rows(every)
    baseline = {
        model: {b: statistics.median(rate for rate, _ in runs) for b, runs in by_batch.items()}
        for model, by_batch in in_process.items()
    }
    rows.sort(key=lambda r: (r.model, r.client, r.server, r.concurrency))
    print("\n== results (inferences = sequences of", opts.seq_len, "tokens) ==")
    print_rows(rows)
    compared = ratios(rows, specs, baseline)
    print_ratios(compared)
    print(
        "\nperf_analyzer drives bertserve and PyTriton (HTTP, binary tensors). MLServer lacks"
        " Triton's binary extension and config endpoint, so it is driven only by the"
        " json-asyncio client (V2 JSON), which also ran against the others for comparison."
        " Client and servers share this machine's cores. CPU %: 100 = one core busy;"
        f" this machine has {os.cpu_count()} cores. 'srv' counts the server's process tree,"
        " 'all' every process on the machine (client and anything else running)."
    )
    result = {
        "date": started,
        "machine": machine_info(),
        "versions": versions(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "models": [asdict(s) for s in specs],
        "in_process_ort": {
            model: {b: {"median": baseline[model][b], "runs": runs} for b, runs in by_batch.items()}
            for model, by_batch in in_process.items()
        },
        "rows": [asdict(r) for r in rows],
        "ratios": compared,
    }
    output = opts.output or log_dir / "compare_servers.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
