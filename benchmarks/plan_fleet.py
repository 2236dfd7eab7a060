"""Does the plan's fleet model hold? `bertserve plan` sizes a fleet from one replica's
measured curve (the curve read at a target utilization, times the replicas); here two
replicas behind nginx measure what that predicts.

    python benchmarks/plan_fleet.py --repo REPO --model NAME [--seq 64] [--budget-ms 500]
        [--utilization 0.7] [--window-ms 3000] [--rounds 3] [--max-minutes 8] [--json OUT.json]

A replica is one `bertserve serve` pinned to one CPU (every thread, by sched_setaffinity),
as a pod with its own cores: replica A alone on CPU 0 is planned (`bertserve plan`,
explicit model-control mode, priced as a 1-vCPU machine); then the winning config.pbtxt goes
into the repository, replicas on CPU 0 and CPU 1 serve it behind nginx (the local ingress
scenario, deploy/nginx/nginx.conf.template through benchmarks/ingress.py), and
`bertserve perf` drives them at the plan's predicted concurrency for two replicas. The
client and nginx share those two CPUs, so the model should be compute-bound (BERT-sized,
tens of milliseconds a request), as a real replica is. Rounds alternate a direct point at
one replica (the same load per replica, to see drift) with the two behind nginx; medians
decide. The prediction is within 15% when |measured - predicted| / predicted <= 0.15.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bertserve.launch import ServerProcess
from harness import cpu_name, markdown_table, package_versions, start_bertserve
from ingress import perf, start_nginx

__all__ = ["main"]

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: The prediction passes when the measured throughput is within this share of it.
TOLERANCE = 0.15


def pin(server: ServerProcess, cpu: int) -> None:
    """Every thread of the server on one CPU; threads it starts later inherit it."""
    for task in Path(f"/proc/{server.pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (every thread, user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replica(repo: Path, model: str, cpu: int, log: Path, *extra: str) -> ServerProcess:
    server = start_bertserve(repo, model, args=list(extra), log=log)
    pin(server, cpu)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--seq", type=int, default=64, help="sequence length (64)")
    parser.add_argument("--budget-ms", type=float, default=500.0, help="p99 budget (500)")
    parser.add_argument("--utilization", type=float, default=0.7, help="target (0.7)")
    parser.add_argument("--window-ms", type=int, default=3000, help="perf window (3000)")
    parser.add_argument("--machine", default="gcp-n1-standard-1", help="a 1-vCPU machine id")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the check (3)")
    parser.add_argument(
        "--max-minutes", type=float, default=8.0, help="plan's search bound in minutes (8)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("two replicas on CPUs of their own need two CPUs")

    work = Path(tempfile.mkdtemp(prefix="bertserve-plan-fleet-"))
    repo = work / "repo"
    shutil.copytree(args.repo / args.model, repo / args.model)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    explicit = ("--model-control-mode", "explicit", "--load-model", args.model)
    with replica(repo, args.model, 0, work / "plan-server.log", *explicit) as one:
        command = [
            sys.executable, "-m", "bertserve", "plan", "-m", args.model, "-u", one.http_url,
            "--latency-budget-ms", f"{args.budget_ms:g}", "--utilization", f"{args.utilization}",
            "--machine", args.machine, "--qps", "1", "-p", str(args.window_ms),
            "--input-data", "zero", "--no-variants", "--max-minutes", f"{args.max_minutes:g}",
            "-o", str(work / "plan"),
            *[arg for name in INPUTS for arg in ("--shape", f"{name}:{args.seq}")],
        ]  # fmt: skip
        print("bertserve plan on one replica (CPU 0) ...", flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        (work / "plan.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"bertserve plan failed ({done.returncode}):\n{done.stderr[-3000:]}")
    plan = json.loads((work / "plan" / "plan.json").read_text())
    predicted = plan["predictions"]["2"]
    per_replica = max(1, round(predicted["concurrency"] / 2))
    print(f"  predicted for 2 replicas: {predicted}", flush=True)
    shutil.copy(work / "plan" / "config.pbtxt", repo / args.model / "config.pbtxt")

    samples: dict[str, list[dict]] = {"one replica, direct": [], "two replicas, nginx": []}
    replicas: list[ServerProcess] = []
    proxy = None
    try:
        for cpu in (0, 1):
            replicas.append(replica(repo, args.model, cpu, work / f"replica-{cpu}.log"))
        proxy, http, _ = start_nginx(replicas, work / "nginx", args.model)
        for r in range(args.rounds):
            out = work / f"r{r}"
            for label, url, load in (
                ("one replica, direct", replicas[0].http_url, per_replica),
                ("two replicas, nginx", http, predicted["concurrency"]),
            ):
                file = out.with_suffix(f".{len(samples[label])}-{load}")
                # How much of its CPU each replica got: on a machine shared with other work,
                # a replica short of a whole core serves less than the plan's curve says.
                before = [cpu_seconds(r.pid) for r in replicas], time.monotonic()
                point = perf(url, "http", args.model, load, args.window_ms, file, seq=args.seq)
                wall = time.monotonic() - before[1]
                point["cpu_share"] = [
                    round((cpu_seconds(r.pid) - used) / wall, 3)
                    for r, used in zip(replicas, before[0], strict=True)
                ]
                point["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
                samples[label].append(point)
            print(f"  round {r + 1}: {samples}", flush=True)
    finally:
        if proxy is not None:
            proxy.stop()
        for server in replicas:
            server.stop()

    measured = statistics.median(s["throughput"] for s in samples["two replicas, nginx"])
    error = (measured - predicted["throughput"]) / predicted["throughput"]
    record: dict[str, Any] = {
        "date": date,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "versions": package_versions(["bertserve", "onnxruntime"]),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "winner": plan["winner"]["label"],
        "capacity_one_replica": plan["fleet"]["capacity"],
        "operating_point": plan["fleet"]["operating_point"],
        "predicted_two": predicted,
        "samples": samples,
        "measured_two": measured,
        "error": error,
        "within_tolerance": abs(error) <= TOLERANCE,
        "plan_command": " ".join(command),
    }
    rows = [
        ("predicted (one replica's curve x 2)", predicted["concurrency"],
         f"{predicted['throughput']:,.1f}", f"{predicted['latency_us'] / 1000:,.1f}"),
        *[(label, predicted["concurrency"] if "two" in label else per_replica,
           f"{statistics.median(s['throughput'] for s in points):,.1f}",
           f"{statistics.median(s['p99_us'] for s in points) / 1000:,.1f}")
          for label, points in samples.items()],
    ]  # fmt: skip
    headers = ("", "concurrency", "inferences/s", "p99 ms")
    for label, points in samples.items():
        shares = ", ".join(f"{p['cpu_share']}" for p in points)
        print(f"{label}: CPU of replicas A, B per round (cores) {shares}")
    print(markdown_table(headers, rows, (False, True, True, True)))
    verdict = "within" if abs(error) <= TOLERANCE else "NOT within"
    print(f"measured / predicted - 1 = {error:+.1%}: {verdict} {TOLERANCE:.0%}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
