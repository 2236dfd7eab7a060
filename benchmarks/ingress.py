"""What an ingress hop costs, and how replicas add up: `bertserve perf` straight at one
`bertserve serve`, then through nginx (deploy/nginx/nginx.conf.template) in front of one and of
two replicas, over HTTP/1.1 and gRPC (h2c), all on loopback.

    python benchmarks/ingress.py --repo REPO [--model NAME] [--concurrency 1,8]
        [--window-ms 2000] [--rounds 2] [--json OUT.json] [--append docs/deploy.md]

The reference's latencies were measured through Istio's ingress gateway; this is the same hop
with nginx, which the Ingress values of the chart use. Before measuring, answers through nginx
are checked with tritonclient over both protocols, and each replica's statistics must show it
served requests. Points of one round run back to back and rounds repeat (median kept), so a
busy machine's drift spreads over every configuration. Needs nginx (Debian package nginx).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from bertserve.launch import ChildProcess, ServerProcess
from bertserve.perf.results import read_run
from harness import ROOT, v2_ready

TEMPLATE = ROOT / "deploy" / "nginx" / "nginx.conf.template"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_nginx(
    replicas: list[ServerProcess], root: Path, model: str, workers: str = "1"
) -> tuple[ChildProcess, str, str]:
    """nginx in front of `replicas`, started (ready once `model` answers ready through it);
    returns it and its HTTP and gRPC addresses."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    http, grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    root.mkdir(parents=True, exist_ok=True)
    fields = {
        "@PREFIX@": str(root),
        "@HTTP_LISTEN@": http,
        "@GRPC_LISTEN@": grpc,
        "@WORKERS@": workers,
        "@HTTP_SERVERS@": "\n".join(f"        server {r.http_url};" for r in replicas),
        "@GRPC_SERVERS@": "\n".join(f"        server {r.grpc_url};" for r in replicas),
    }
    text = TEMPLATE.read_text()
    for key, value in fields.items():
        text = text.replace(key, value)
    (root / "nginx.conf").write_text(text)
    command = [
        nginx,
        "-p",
        str(root),
        "-c",
        str(root / "nginx.conf"),
        "-e",
        str(root / "error.log"),
    ]
    process = ChildProcess(command, name="nginx", ready=v2_ready(http, model), ready_timeout=30)
    return process.start(), http, grpc


def tiny_inputs(module, seq: int = 16) -> list:
    tensors = []
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        tensor = module.InferInput(name, [1, seq], "INT64")
        tensor.set_data_from_numpy(np.ones((1, seq), np.int64))
        tensors.append(tensor)
    return tensors


def check_through(http: str, grpc: str, model: str, replicas: list[ServerProcess]) -> list[int]:
    """Answers through nginx over both protocols; each replica's share of them."""
    with httpclient.InferenceServerClient(http) as client:
        for _ in range(20):
            assert client.infer(model, tiny_inputs(httpclient)).as_numpy("start_logits") is not None
    with grpcclient.InferenceServerClient(grpc) as client:
        for _ in range(20):
            assert client.infer(model, tiny_inputs(grpcclient)).as_numpy("start_logits") is not None
    served = []
    for replica in replicas:
        with httpclient.InferenceServerClient(replica.http_url) as client:
            stats = client.get_inference_statistics(model)["model_stats"][0]
            served.append(int(stats["inference_stats"]["success"]["count"]))
    return served


def perf(
    url: str,
    protocol: str,
    model: str,
    concurrency: int,
    window_ms: int,
    out: Path,
    seq: int = 128,
) -> dict:
    """One `bertserve perf` point, as a user runs it; client-side numbers only (through a
    balancer, the server statistics it reads come from whichever replica answers)."""
    command = [sys.executable, "-m", "bertserve", "perf", "-m", model, "-u", url]
    command += ["-i", protocol, "--concurrency-range", str(concurrency), "-p", str(window_ms)]
    command += ["--input-data", "zero", "--shape", f"input_ids:{seq}"]
    command += ["--shape", f"attention_mask:{seq}", "--shape", f"token_type_ids:{seq}"]
    command += ["--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 2):  # 2: not stable, still measured
        raise RuntimeError(f"bertserve perf failed:\n{done.stdout}\n{done.stderr}")
    point = read_run(out).measurements[0]
    if point.errors:
        output = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"{point.errors} failed requests through {url} ({protocol}):\n{output}")
    return {
        "throughput": point.throughput,
        "p50_us": point.latency_p50_us,
        "p99_us": point.latency_p99_us,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--model", default="bert_tiny_onnx_cpu")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--append", type=Path, help="append the Markdown table to this file")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bertserve-ingress-"))
    replicas: list[ServerProcess] = []
    proxies: list[ChildProcess] = []
    failed = True
    try:
        for _ in range(2):
            replicas.append(ServerProcess(args.repo).start())
        one, http1, grpc1 = start_nginx(replicas[:1], work / "nginx-1", args.model)
        proxies.append(one)
        two, http2, grpc2 = start_nginx(replicas, work / "nginx-2", args.model)
        proxies.append(two)
        shares = check_through(http2, grpc2, args.model, replicas)
        if min(shares) == 0:
            raise RuntimeError(f"nginx sent every request to one replica: {shares}")
        targets = {
            "direct, 1 replica": (replicas[0].http_url, replicas[0].grpc_url),
            "nginx, 1 replica": (http1, grpc1),
            "nginx, 2 replicas": (http2, grpc2),
        }
        samples: dict[tuple[str, str, int], list[dict]] = {}
        for _ in range(args.rounds):
            for concurrency in concurrencies:
                for protocol in ("http", "grpc"):
                    for label, (http, grpc) in targets.items():
                        url = http if protocol == "http" else grpc
                        out = work / f"{len(samples)}-{time.monotonic_ns()}.json"
                        point = perf(url, protocol, args.model, concurrency, args.window_ms, out)
                        samples.setdefault((label, protocol, concurrency), []).append(point)
        failed = False
    finally:
        if failed:  # what nginx saw, before its folder goes
            for log in work.glob("nginx-*/error.log"):
                print(f"{log}:\n{log.read_text()[-4000:]}", file=sys.stderr)
        for proxy in proxies:
            proxy.stop()
        for replica in replicas:
            replica.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for (label, protocol, concurrency), points in samples.items():
        rows.append(
            {
                "target": label,
                "protocol": protocol,
                "concurrency": concurrency,
                "throughput": statistics.median(p["throughput"] for p in points),
                "p50_us": statistics.median(p["p50_us"] for p in points),
                "p99_us": statistics.median(p["p99_us"] for p in points),
                "rounds": len(points),
            }
        )
    table = markdown(rows, args)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "replica_shares": shares}, indent=2))
    if args.append:
        with args.append.open("a", encoding="utf-8") as doc:
            doc.write("\n" + table)
    return 0


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    direct = {
        (r["protocol"], r["concurrency"]): r for r in rows if r["target"] == "direct, 1 replica"
    }
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.machine()}), nginx {nginx_version()}, model {args.model} at sequence 128, "
        f"`bertserve perf` windows of {args.window_ms} ms, median of {args.rounds} round(s).",
        "",
        "| protocol | concurrency | target | infer/s | p50 ms | p99 ms | p50 added by the hop |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["protocol"], r["concurrency"], r["target"])):
        base = direct[(r["protocol"], r["concurrency"])]
        added = "" if r is base else f"{(r['p50_us'] - base['p50_us']) / 1000:+.3f} ms"
        lines.append(
            f"| {r['protocol']} | {r['concurrency']} | {r['target']} | {r['throughput']:,.0f} "
            f"| {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {added} |"
        )
    return "\n".join(lines) + "\n"


def nginx_version() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    return done.stderr.strip().rpartition("/")[2]


if __name__ == "__main__":
    raise SystemExit(main())
