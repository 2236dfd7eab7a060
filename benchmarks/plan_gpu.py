"""`bertserve plan` on the reference's BERT-base model on one GPU, end to end: build the
model (architecture-exact random weights) as `bertserve build` writes the reference's
`bert_base_trt_gpu` row, serve it in explicit model-control mode, plan it, and keep every
file under --out.

    python3 benchmarks/plan_gpu.py --out DIR [--machine ID ...] [--budget-ms 100] [--qps N]
        [--minutes 5] [--dry-run]

The model: BERT-base (vocab 28,996) for question answering, random weights (seed 0), the
GPU engine (`bertserve_torch`) in fp16 at sequence 384 with the row's scheduling (max batch
4, preferred 4, 200 ms queue delay, 2 instances) as the seed of the search. The load: rows
of 384 tokens, `-b 4` per request (one process's front end answers ~3,000 requests/s; four
rows each keep the engine, not the front end, the limit). `--dry-run` plans a tiny BERT on
the CPU through the same engine, to check every step here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bertserve.launch import ServerProcess

__all__ = ["main"]

#: The reference's BERT-base GPU row, as `bertserve build --preset bert-base` names it.
MODEL = "bert_base_trt_gpu"
DRY_MODEL = "bert_tiny_torch_cpu"
#: One H200 as rented: a GCP a3-ultragpu-8g's eighth and an AWS p5en.48xlarge's.
H200 = ("gcp-a3-ultragpu-8g-1gpu", "aws-p5en-48xlarge-1gpu")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def build_model(repo: Path, dry_run: bool) -> str:
    """The reference's GPU row, written as the builder writes it (config.pbtxt, fp16
    safetensors, tokenizer), checked against transformers on the device it will serve on."""
    from tritonclient.grpc import model_config_pb2

    from bertserve.backends.base import Device
    from bertserve.builder.checkpoint import load_checkpoint
    from bertserve.builder.gpu_variant import write_gpu_variant
    from bertserve.builder.model_config import TOKENIZER_DIR, model_config, write_model_config
    from bertserve.builder.presets import ARCHITECTURES, PRESETS
    from bertserve.builder.workflow import config_parameters

    (variant,) = [v for v in PRESETS["bert-base"] if v.name == MODEL]
    name = MODEL
    if dry_run:
        name = DRY_MODEL
        variant = dataclasses.replace(variant, name=name, architecture=ARCHITECTURES["tiny"])
    checkpoint = load_checkpoint(variant.architecture, "random", seed=0)
    version = repo / name / "1"
    checkpoint.write_tokenizer(version / TOKENIZER_DIR)
    config = model_config(variant, config_parameters(variant, checkpoint))
    device = Device("cpu") if dry_run else Device("gpu", 0)
    report = write_gpu_variant(variant, checkpoint.model, config, version, device=device)
    if dry_run:
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    write_model_config(config, repo / name)
    (version / "build_report.json").write_text(json.dumps(report, indent=2, default=str))
    return name


#: What comes back from the device (at most 8 files): these from the plan's folder, the
#: server's log, run.json (this run: command, timings, versions, nvidia-smi) and the shell's
#: log.txt.
KEPT = ("plan.json", "config.pbtxt", "values.yaml", "report.md", "report.html")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the results go")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bertserve-plan-gpu"))
    parser.add_argument("--machine", action="append", default=[], metavar="ID")
    parser.add_argument("--budget-ms", type=float, default=100.0, help="p99 budget (100)")
    parser.add_argument("--qps", type=float, default=20000.0, help="fleet target (20,000/s)")
    parser.add_argument("--minutes", type=float, default=5.0, help="search time limit (5)")
    parser.add_argument("--window-ms", type=int, default=1000, help="perf window (1000)")
    parser.add_argument("--batch", type=int, default=4, help="inferences per request (4)")
    parser.add_argument("--dry-run", action="store_true", help="a tiny BERT on the CPU")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.work.exists():
        shutil.rmtree(args.work)
    repo, plan_dir = args.work / "repo", args.work / "plan"
    started = time.monotonic()
    model = build_model(repo, args.dry_run)
    built_s = time.monotonic() - started
    seq = 128 if args.dry_run else 384
    machines = args.machine or (["gcp-n1-standard-2"] if args.dry_run else list(H200))
    minutes = min(args.minutes, 1.5) if args.dry_run else args.minutes
    serve = ["--model-control-mode", "explicit", "--load-model", model]
    log = args.out / "server.log"
    with ServerProcess(repo, args=serve, log=log, ready_timeout=900) as server:
        command = [
            sys.executable, "-m", "bertserve", "plan", "-m", model, "-u", server.http_url,
            "--latency-budget-ms", f"{args.budget_ms:g}", "--qps", f"{args.qps:g}",
            "--max-minutes", f"{minutes:g}", "-b", str(args.batch), "-p", str(args.window_ms),
            "-r", "5", "--output", str(plan_dir),
            *[arg for name in INPUTS for arg in ("--shape", f"{name}:{seq}")],
            *[arg for m in machines for arg in ("--machine", m)],
        ]  # fmt: skip
        if args.dry_run:
            command += ["--max-batch-size", "16", "-s", "50"]
        print(" ".join(command), flush=True)
        code = subprocess.run(command).returncode
    for name in KEPT:
        if (plan_dir / name).is_file():
            shutil.copy(plan_dir / name, args.out / name)
    record = {
        "model": model,
        "dry_run": args.dry_run,
        "command": command,
        "exit_code": code,
        "build_seconds": round(built_s, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "python": platform.python_version(),
        "host": platform.node(),
        "gpu": _gpu_name(),
        "nvidia_smi": _smi(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (args.out / "run.json").write_text(json.dumps(record, indent=2))
    return code


def _smi() -> str:
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no nvidia-smi: {exc}"
    return done.stdout.strip()


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        return "no torch"


if __name__ == "__main__":
    sys.exit(main())
