"""Triton's Model Analyzer, in remote mode, on a repository as `bertserve build` writes it.

Starts `bertserve serve` in explicit model control (Model Analyzer loads each config variant
it tries through the load API), writes the short Model Analyzer config that
docs/triton-compat.md documents, runs `model-analyzer profile` (quick search) and prints the
configurations it measured, best first, with the machine, versions and date.

    python benchmarks/model_analyzer_check.py [--repo REPO --model NAME] [--append FILE]

Without --repo, the tiny preset is built into a temporary folder. Model Analyzer lives in its
own venv (its pins conflict with ours): python3 -m venv .venv-ma &&
.venv-ma/bin/pip install triton-model-analyzer. Needs perf_analyzer
(scripts/install_perf_analyzer.sh).
"""

from __future__ import annotations

import argparse
import csv
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bertserve.builder.model_config import PERF_INPUT_FILE
from harness import (
    ROOT,
    cpu_name,
    markdown_table,
    package_versions,
    perf_analyzer_version,
    require_perf_analyzer,
    start_bertserve,
)


def model_analyzer_config(
    repo: Path, model: str, http: str, grpc: str, metrics: str, work: Path, args: argparse.Namespace
) -> str:
    """The whole Model Analyzer config: the endpoints, and for the model `cpu_only` (its
    variants then ask for KIND_CPU instances) and the input data file the builder wrote."""
    from bertserve.perf.analyzer import find_perf_analyzer

    command = find_perf_analyzer()
    assert command is not None
    return f"""\
model_repository: {repo}
triton_launch_mode: remote
triton_http_endpoint: {http}
triton_grpc_endpoint: {grpc}
triton_metrics_url: http://{metrics}/metrics
perf_analyzer_path: {command[0]}
output_model_repository_path: {work / "variants"}
override_output_model_repository: true
export_path: {work / "results"}
checkpoint_directory: {work / "checkpoints"}
run_config_search_mode: quick
run_config_search_max_concurrency: {args.max_concurrency}
run_config_search_max_instance_count: {args.max_instances}
run_config_search_max_model_batch_size: {args.max_batch_size}
profile_models:
  {model}:
    cpu_only: true
    perf_analyzer_flags:
      input-data: {repo / model / PERF_INPUT_FILE}
"""


def build_tiny(folder: Path) -> Path:
    from bertserve.builder import build_preset

    repo = folder / "repo"
    build_preset("tiny", repo)
    return repo


def read_results(work: Path) -> list[dict[str, str]]:
    path = work / "results" / "results" / "metrics-model-inference.csv"
    with path.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("Model")]
    return sorted(rows, key=lambda r: -float(r["Throughput (infer/sec)"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repo", type=Path, help="model repository (default: build the tiny preset)")
    p.add_argument("--model", default="bert_tiny_onnx_cpu")
    p.add_argument("--model-analyzer", type=Path, default=ROOT / ".venv-ma/bin/model-analyzer")
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--max-instances", type=int, default=2)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--timeout", type=float, default=1800, help="seconds for the whole profile")
    p.add_argument("--append", type=Path, help="append the Markdown result to this file")
    args = p.parse_args()
    require_perf_analyzer()
    if not args.model_analyzer.exists():
        raise SystemExit(
            f"{args.model_analyzer} not found: python3 -m venv .venv-ma && "
            ".venv-ma/bin/pip install triton-model-analyzer"
        )
    with tempfile.TemporaryDirectory(prefix="bertserve-ma-") as tmp:
        work = Path(tmp)
        repo = args.repo.resolve() if args.repo else build_tiny(work)
        flags = ["--model-control-mode=explicit", f"--load-model={args.model}"]
        with start_bertserve(repo, args.model, args=flags, log=work / "server.log") as server:
            config = work / "model_analyzer.yaml"
            config.write_text(
                model_analyzer_config(
                    repo,
                    args.model,
                    server.http_url,
                    server.grpc_url,
                    f"127.0.0.1:{server.ports['metrics']}",
                    work,
                    args,
                )  # fmt: skip
            )
            started = time.monotonic()
            done = subprocess.run(
                [str(args.model_analyzer), "profile", "-f", str(config)],
                cwd=work, capture_output=True, text=True, timeout=args.timeout, check=False,
            )  # fmt: skip
            minutes = (time.monotonic() - started) / 60
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"model-analyzer profile failed (exit {done.returncode})")
        rows = read_results(work)
    versions = package_versions(["bertserve", "onnxruntime", "tritonclient"])
    ma_version = subprocess.run(
        [str(args.model_analyzer), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    table = markdown_table(
        ["config", "instances", "max batch", "concurrency", "infer/s", "p99 ms"],
        [
            (
                r["Model Config Path"],
                r["Instance Group"],
                r["Max Batch Size"],
                r["Concurrency"],
                r["Throughput (infer/sec)"],
                r["p99 Latency (ms)"],
            )
            for r in rows
        ],  # fmt: skip
        numeric=[False, False, True, True, True, True],
    )
    configs = len({r["Model Config Path"] for r in rows})
    text = (
        f"Model Analyzer {ma_version} (remote mode, quick search) on `{args.model}`: "
        f"{configs} configurations, {len(rows)} measurements, {minutes:.1f} min.\n"
        f"{datetime.now(UTC):%Y-%m-%d}, {cpu_name()} ({platform.machine()}), "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f", {perf_analyzer_version()}.\n\n{table}\n"
    )
    print(text)
    if args.append:
        with args.append.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
