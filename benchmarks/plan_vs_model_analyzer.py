"""`bertserve plan` against Triton Model Analyzer's quick search on the same model, server
and machine: which finds the higher throughput within the same p99 budget, and in how many
measurements.

    python benchmarks/plan_vs_model_analyzer.py --repo REPO [--model NAME] [--budget-ms 50]
        [--window-ms 1000] [--seq 128] [--machine ID] [--rounds 3] [--json OUT.json]

Model Analyzer (PyPI `triton-model-analyzer`) runs from its own git-ignored venv, `.venv-ma`
(its pins are not ours; the one benchmarks/model_analyzer_check.py uses): `python3 -m venv
.venv-ma && .venv-ma/bin/pip install triton-model-analyzer`. It runs in remote mode against
`bertserve serve --model-control-mode explicit` and drives the real perf_analyzer (.venv-pa),
through a wrapper here that logs every call, so its measurements are counted exactly: each
perf_analyzer run (a config at a concurrency, retries included) and each distinct point.
`bertserve plan` counts the points it measured to stability (its noise repeat and closing
confirmation included) and may measure no more than Model Analyzer did (`--max-measurements`, a
hard limit). Each tool starts from a fresh server holding the same config: the model's own with
its preferred batch sizes removed, because Model Analyzer keeps a config's preferred sizes in
every variant it makes, finds max_batch_size 1 below them "illegal" and ends its quick search
at its first step (seen with 1.58.0). Both measure with 1 s windows and the same stability
rule.

Then the two winners are loaded in turn into one server and measured by perf_analyzer at
each one's own best concurrency, alternating, `--rounds` times: the medians decide.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.launch import ServerProcess
from bertserve.perf.analyzer import PerfAnalyzerFailed, find_perf_analyzer
from bertserve.plan.control import ModelControl
from harness import (
    ROOT,
    cpu_name,
    markdown_table,
    package_versions,
    perf_analyzer_args,
    perf_analyzer_point,
    perf_analyzer_version,
    start_bertserve,
)

__all__ = ["main"]

MA_VENV = ROOT / ".venv-ma"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def prepare_repo(source: Path, model: str, work: Path) -> Path:
    """A repository holding `model` alone, its config without preferred batch sizes."""
    repo = work / "repo"
    shutil.copytree(source / model, repo / model)
    path = repo / model / "config.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    config.dynamic_batching.ClearField("preferred_batch_size")
    path.write_text(text_format.MessageToString(config))
    return repo


def explicit(repo: Path, model: str, log: Path) -> ServerProcess:
    args = ["--model-control-mode", "explicit", "--load-model", model]
    return start_bertserve(repo, model, args=args, log=log)


def counting_perf_analyzer(work: Path) -> tuple[Path, Path]:
    """A perf_analyzer that logs its arguments, one call a line, then runs the real one."""
    command = find_perf_analyzer()
    if command is None:
        raise SystemExit("perf_analyzer not found: run scripts/install_perf_analyzer.sh")
    calls = work / "perf_analyzer_calls.txt"
    wrapper = work / "perf_analyzer"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {shlex.quote(str(calls))}\n'
        f'exec {" ".join(shlex.quote(c) for c in command)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, calls


def run_model_analyzer(
    server: ServerProcess, repo: Path, model: str, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    binary = MA_VENV / "bin" / "model-analyzer"
    if not binary.exists():
        raise SystemExit(
            f"{binary} not found: python3 -m venv .venv-ma && "
            ".venv-ma/bin/pip install triton-model-analyzer"
        )
    wrapper, calls = counting_perf_analyzer(work)
    out = work / "model_analyzer"
    config = {
        "model_repository": str(repo),
        "profile_models": {
            model: {
                "cpu_only": True,
                "perf_analyzer_flags": {
                    "shape": [f"{name}:{args.seq}" for name in INPUTS],
                    "input-data": "zero",
                    "measurement-mode": "time_windows",
                    "measurement-interval": args.window_ms,
                },
            }
        },
        "triton_launch_mode": "remote",
        "triton_http_endpoint": server.http_url,
        "triton_grpc_endpoint": server.grpc_url,
        "triton_metrics_url": server.metrics_url,
        "client_protocol": "http",
        "run_config_search_mode": "quick",
        "latency_budget": args.budget_ms,
        "perf_analyzer_path": str(wrapper),
        "output_model_repository_path": str(out / "models"),
        "override_output_model_repository": True,
        "export_path": str(out / "export"),
        "checkpoint_directory": str(out / "checkpoints"),
        "report_model_configs": [],
    }
    (out / "export").mkdir(parents=True)
    path = work / "model_analyzer.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(config, indent=2))
    started = time.monotonic()
    done = subprocess.run(
        [str(binary), "profile", "-f", str(path)], capture_output=True, text=True, cwd=work
    )
    seconds = time.monotonic() - started
    (work / "model_analyzer.log").write_text(done.stdout + done.stderr)
    rows = _read_csv(out / "export" / "results" / "metrics-model-inference.csv")
    runs = calls.read_text().splitlines() if calls.exists() else []
    within = [r for r in rows if r["Satisfies Constraints"] == "Yes"]
    best = max(within, key=lambda r: float(r["Throughput (infer/sec)"]), default=None)
    result: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "exit_code": done.returncode,
        "perf_analyzer_runs": len(runs),
        # One "Profiling <config>: concurrency=N" line per point measured (a point's
        # perf_analyzer runs may be several: retries with more requests).
        "points": sum(
            1
            for line in done.stdout.splitlines()
            if "Profiling " in line and "concurrency=" in line
        ),
        "rows": rows,
        "best": best,
    }
    if best is not None:
        variant = out / "models" / best["Model Config Path"] / "config.pbtxt"
        result["config"] = variant.read_text()
        result["concurrency"] = int(best["Concurrency"])
    return result


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def run_plan(
    server: ServerProcess, model: str, args: argparse.Namespace, work: Path, limit: int
) -> dict[str, Any]:
    """`bertserve plan` allowed at most `limit` points (Model Analyzer's count)."""
    out = work / "plan"
    command = [
        sys.executable, "-m", "bertserve", "plan", "-m", model, "-u", server.http_url,
        "--latency-budget-ms", f"{args.budget_ms:g}", "-p", str(args.window_ms),
        "--input-data", "zero", "--machine", args.machine, "-o", str(out),
        "--max-measurements", str(limit),
        *(["--catalog", str(args.catalog)] if args.catalog else []),
        *[arg for name in INPUTS for arg in ("--shape", f"{name}:{args.seq}")],
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - started
    (work / "plan.log").write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"bertserve plan failed ({done.returncode}):\n{done.stderr[-3000:]}")
    plan = json.loads((out / "plan.json").read_text())
    winner = plan["winner"]
    return {
        "seconds": round(seconds, 1),
        "points": plan["measurements"],
        "candidates": sum(1 for c in plan["candidates"] if c["points"]),
        "noise": plan["noise"]["value"],
        "best": winner,
        "config": (out / "config.pbtxt").read_text() if winner else None,
        "concurrency": int(winner["best"]["concurrency"]) if winner else None,
        "command": " ".join(command),
    }


def head_to_head(
    repo: Path, model: str, picks: dict[str, tuple[str, int]], args: argparse.Namespace,
    work: Path,
) -> dict[str, list[dict[str, float]]]:  # fmt: skip
    """Each pick (config text, concurrency) loaded in turn and measured by perf_analyzer."""
    results: dict[str, list[dict[str, float]]] = {tool: [] for tool in picks}
    server = explicit(repo, model, work / "server-final.log")
    control = ModelControl(server.http_url, "http")
    try:
        for round_ in range(args.rounds):
            order = list(picks) if round_ % 2 == 0 else list(reversed(picks))
            for tool in order:
                text, concurrency = picks[tool]
                config = text_format.Parse(text, model_config_pb2.ModelConfig())
                config.name = model
                control.load(model, config)
                shapes = {name: (-1,) for name in INPUTS}
                try:
                    point = perf_analyzer_point(
                        perf_analyzer_args(
                            model, server.http_url, concurrency=concurrency,
                            window_ms=args.window_ms, stability=10, max_trials=10,
                            shapes=shapes, seq_len=args.seq,
                        ),
                        attempts=3,
                        label=tool,
                    )  # fmt: skip
                except PerfAnalyzerFailed:
                    # A pick that never steadies at its own load is a result too (on a busy
                    # machine, a point at the edge of the budget); the rounds go on.
                    results[tool].append({"throughput": math.nan, "p99_ms": math.nan})
                    print(f"  round {round_ + 1} {tool}: no stable measurement", flush=True)
                    continue
                results[tool].append(
                    {"throughput": point.throughput, "p99_ms": point.latency_p99_us / 1000}
                )
                print(
                    f"  round {round_ + 1} {tool}: {point.throughput:.1f}/s, p99 "
                    f"{point.latency_p99_us / 1000:.1f} ms",
                    flush=True,
                )
    finally:
        control.close()
        server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a repository holding --model")
    parser.add_argument("--model", default="bert_tiny_onnx_cpu")
    parser.add_argument("--budget-ms", type=float, default=50.0, help="p99 budget (50)")
    parser.add_argument("--window-ms", type=int, default=1000, help="measurement window (1000)")
    parser.add_argument("--seq", type=int, default=128, help="sequence length (128)")
    parser.add_argument("--machine", default="gcp-n1-standard-2", help="catalog id for plan")
    parser.add_argument("--catalog", type=Path, help="a price catalog merged over ours, for plan")
    parser.add_argument("--rounds", type=int, default=3, help="head-to-head rounds (3)")
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bertserve-plan-vs-ma-"))
    repo = prepare_repo(args.repo, args.model, work)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with explicit(repo, args.model, work / "server-ma.log") as server:
        print("Model Analyzer quick search ...", flush=True)
        ma = run_model_analyzer(server, repo, args.model, args, work)
    print(f"  {ma['perf_analyzer_runs']} perf_analyzer runs, {ma['seconds']} s", flush=True)
    with explicit(repo, args.model, work / "server-plan.log") as server:
        print("bertserve plan ...", flush=True)
        plan = run_plan(server, args.model, args, work, max(1, ma["points"]))
    print(f"  {plan['points']} points, {plan['seconds']} s", flush=True)
    picks = {}
    if ma.get("config"):
        picks["Model Analyzer"] = (ma["config"], ma["concurrency"])
    if plan.get("config"):
        picks["bertserve plan"] = (plan["config"], plan["concurrency"])
    final = head_to_head(repo, args.model, picks, args, work) if picks else {}
    record = {
        "date": started,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "versions": {
            **package_versions(["bertserve", "tritonclient"]),
            "model-analyzer": _ma_version(),
            "perf_analyzer": perf_analyzer_version(),
        },
        "settings": {k: str(v) for k, v in vars(args).items()},
        "model_analyzer": ma,
        "plan": plan,
        "head_to_head": final,
    }
    print(table(record, args))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2, default=str))
    if args.keep:
        shutil.copytree(work, args.keep, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _ma_version() -> str:
    done = subprocess.run(
        [str(MA_VENV / "bin" / "model-analyzer"), "--version"], capture_output=True, text=True
    )
    return (done.stdout or done.stderr).strip().splitlines()[-1] if done.returncode == 0 else "?"


def table(record: dict[str, Any], args: argparse.Namespace) -> str:
    ma, plan, final = record["model_analyzer"], record["plan"], record["head_to_head"]
    rows = []
    for tool, found, points, runs, seconds in (
        ("Model Analyzer quick", ma.get("best"), ma["points"], ma["perf_analyzer_runs"],
         ma["seconds"]),
        ("bertserve plan", plan.get("best"), plan["points"], plan["points"], plan["seconds"]),
    ):  # fmt: skip
        name = "Model Analyzer" if tool.startswith("Model") else "bertserve plan"
        steady = [r for r in final.get(name, []) if not math.isnan(r["throughput"])]
        tp = statistics.median(r["throughput"] for r in steady) if steady else math.nan
        p99 = statistics.median(r["p99_ms"] for r in steady) if steady else math.nan
        rows.append((tool, _describe(found), points, runs, f"{seconds:.0f}", f"{tp:,.1f}",
                     f"{p99:.1f}"))  # fmt: skip
    headers = (
        "tool",
        "winner (its own numbers)",
        "points measured",
        "perf runs",
        "seconds",
        f"head-to-head inferences/s (median of the steady ones of {args.rounds})",
        "head-to-head p99 ms",
    )
    return markdown_table(headers, rows, (False, False, True, True, True, True, True))


def _describe(found: Any) -> str:
    if not found:
        return "nothing within budget"
    if "Model Config Path" in found:
        return (
            f"{found['Model Config Path']} ({found['Instance Group']}, max batch "
            f"{found['Max Batch Size']}) at c {found['Concurrency']}: "
            f"{float(found['Throughput (infer/sec)']):,.1f}/s, p99 {found['p99 Latency (ms)']} ms"
        )
    best = found["best"]
    return (
        f"{found['label']} at c {best['concurrency']}: {best['throughput']:,.1f}/s, p99 "
        f"{best['latency_p99_us'] / 1000:.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
