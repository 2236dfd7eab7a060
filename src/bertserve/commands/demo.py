"""`bertserve demo`: build a small repository, serve it, sweep it, report it; one command, no
network, no GPU. Heavy imports (the builder, the load generator, the report) wait until `run`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from bertserve.cost.catalog import Catalog
    from bertserve.launch import ServerProcess
    from bertserve.perf.results import Run

__all__ = ["HELP", "DemoModel", "add_arguments", "plan", "run"]

HELP = (
    "build small BERT QA models, serve them, sweep them with bertserve perf and write a report "
    "(./bertserve-report: report.md, report.html, plots, raw JSON); a few minutes on a laptop"
)

_READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class DemoModel:
    """A model the demo builds (from a builder preset) and then measures."""

    name: str
    preset: str
    device: str
    seq_len: int
    #: Measurement window: long enough for a few dozen requests of this model at concurrency 1.
    window_ms: float = 1000.0
    #: Loads to sweep when --concurrency-range is not given (None: the demo's default).
    concurrency: str | None = None


def plan(*, quick: bool, gpu: bool, seq_len: int) -> list[DemoModel]:
    """The models a demo run builds and sweeps."""
    if quick:
        return [DemoModel("bert_tiny_onnx_cpu", "tiny", "cpu", 32, window_ms=400.0)]
    models = [
        DemoModel("bert_tiny_onnx_cpu", "tiny", "cpu", 128),
        DemoModel("bert_distill_onnx_cpu", "distilbert", "cpu", seq_len, window_ms=2000.0),
        DemoModel("bert_distill_onnx_cpu_int8", "distilbert", "cpu", seq_len, window_ms=2000.0),
    ]
    if gpu:
        # The reference's GPU config waits up to 200 ms for a batch of 4: sweep multiples of 4
        # so batches fill at once, as the reference swept it (6 to 24).
        models.append(
            DemoModel("bert_distill_onnx_gpu", "distilbert", "gpu", seq_len, concurrency="4:16:4")
        )
    return models


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("bertserve-report"),
        metavar="DIR",
        help="report folder (default ./bertserve-report)",
    )
    p.add_argument(
        "--repository",
        type=Path,
        default=None,
        metavar="DIR",
        help="build the models here and keep them; models already there are reused "
        "(default: a temporary folder, removed afterwards)",
    )
    p.add_argument(
        "--weights",
        default="random",
        metavar="hub|random|DIR",
        help="DistilBERT weights: random (default; no download: the speed is real, "
        "the answers are not), hub (Hugging Face, needs the network or its cache) "
        "or a checkpoint folder",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=128,
        help="sequence length of the DistilBERT models and their requests (default 128)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="only the tiny model, with short windows: a smoke test in well under a minute",
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="also build and sweep the DistilBERT GPU variant (needs a CUDA GPU)",
    )
    p.add_argument(
        "--concurrency-range",
        default=None,
        metavar="START:END:STEP",
        help="loads to sweep (default 1:4:1, the GPU model 4:16:4; 1:2:1 with --quick)",
    )
    p.add_argument(
        "--machine",
        default=None,
        metavar="ID",
        help="price-catalog id of this machine, to cost the results (see "
        "`bertserve report --list-machines`); without it the report has no dollars",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="put the published reference benchmark (Triton GKE app) in the report",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from bertserve.errors import BertserveError

    console = Console()
    if args.gpu:
        reason = _gpu_missing()
        if reason is not None:
            print(
                f"bertserve demo: --gpu needs a CUDA GPU: {reason}. Run without --gpu for "
                "the CPU demo.",
                file=sys.stderr,
            )
            return 2
    try:
        return _demo(args, console)
    except BertserveError as exc:
        print(f"bertserve demo: {exc}", file=sys.stderr)
        return 1


def _gpu_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install 'bertserve[build]')"
    import torch

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False on this machine"
    return None


def _demo(args: argparse.Namespace, console: Console) -> int:
    import shutil
    import tempfile

    from bertserve.cost.catalog import load_catalog

    catalog = load_catalog()
    if args.machine is not None:
        catalog[args.machine]  # fail now, not after the sweep, on an unknown id
    models = plan(quick=args.quick, gpu=args.gpu, seq_len=args.seq_len)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    temporary = args.repository is None
    repo = Path(tempfile.mkdtemp(prefix="bertserve-demo-")) if temporary else args.repository
    started = time.monotonic()
    server = None
    try:
        console.rule("[bold]1/4 build the models")
        random_weights = _build(models, repo, args.weights, console)
        console.rule("[bold]2/4 start the server")
        server = _start_server(repo, output / "server.log", console)
        console.rule("[bold]3/4 measure")
        runs = _sweep(models, server.http_url, args, random_weights, output, console)
    finally:
        if server is not None:
            _stop_server(server, console)
        if temporary:
            shutil.rmtree(repo, ignore_errors=True)
    console.rule("[bold]4/4 report")
    _report(runs, catalog, output, args.reference, console)
    console.print(f"demo done in {time.monotonic() - started:.0f} s", highlight=False)
    return 0


def _build(models: list[DemoModel], repo: Path, weights: str, console: Console) -> dict[str, bool]:
    """Build the models missing from `repo`; which of them have random weights, by name."""
    from bertserve.builder import build_preset, default_weights

    random_weights: dict[str, bool] = {}
    by_preset: dict[str, list[DemoModel]] = {}
    for m in models:
        by_preset.setdefault(m.preset, []).append(m)
    for preset, group in by_preset.items():
        chosen = default_weights(preset) if preset == "tiny" else weights
        for m in group:
            random_weights[m.name] = chosen == "random"
        missing = [m for m in group if not (repo / m.name / "config.pbtxt").is_file()]
        if not missing:
            console.print(f"{preset}: reusing {', '.join(m.name for m in group)} from {repo}")
            continue
        t0 = time.monotonic()
        with console.status(
            f"building {', '.join(m.name for m in missing)} ({preset}, "
            f"{chosen} weights, seq {missing[0].seq_len})"
        ):
            outcome = build_preset(
                preset,
                repo,
                weights=chosen,
                seq_len=missing[0].seq_len if preset != "tiny" else None,
                only=[m.name for m in missing],
            )
        console.print(outcome.summary(), highlight=False, markup=False)
        console.print(f"built in {time.monotonic() - t0:.0f} s", highlight=False)
    if any(random_weights.values()):
        console.print(
            "[bold yellow]Random weights:[/] throughput and latency are real; the "
            "models' answers are meaningless."
        )
    return random_weights


def _start_server(repo: Path, log_path: Path, console: Console) -> ServerProcess:
    """`bertserve serve` in the background on free ports, its output in `log_path`."""
    from bertserve.launch import ServerProcess

    server = ServerProcess(repo, log=log_path, ready_timeout=_READY_TIMEOUT_S)
    with console.status(f"starting bertserve serve; log: {log_path}"):
        server.start()
    console.print(f"server ready at {server.http_url} (pid {server.pid})", highlight=False)
    return server


def _stop_server(server: ServerProcess, console: Console) -> None:
    code = server.stop()
    console.print(f"server stopped (pid {server.pid}, exit {code})", highlight=False)


def _sweep(
    models: list[DemoModel],
    url: str,
    args: argparse.Namespace,
    random_weights: dict[str, bool],
    output: Path,
    console: Console,
) -> list[Run]:
    from dataclasses import replace

    from bertserve.perf.results import write_run
    from bertserve.perf.session import measure
    from bertserve.perf.settings import PerfSettings, parse_range

    default_range = "1:2:1" if args.quick else "1:4:1"
    raw = output / "runs"
    raw.mkdir(exist_ok=True)
    runs = []
    for m in models:
        console.print(f"[bold]{m.name}[/] ({m.device}, seq {m.seq_len})")
        loads = parse_range(
            args.concurrency_range or m.concurrency or default_range,
            integer=True,
            flag="--concurrency-range",
        )
        settings = PerfSettings(
            model=m.name,
            url=url,
            concurrency=loads,
            window_ms=m.window_ms,
            max_trials=5 if args.quick else 6,
            stability_percent=25.0 if args.quick else 10.0,
            input_data="random",
            shapes={name: (m.seq_len,) for name in _input_names(url, m.name)},
            csv_path=str(raw / f"{m.name}.csv"),
            json_path=None,
            label=m.name,
            machine=args.machine,
        )
        result = replace(
            measure(settings, console),
            random_weights=random_weights.get(m.name, False),
        )
        write_run(result, raw / f"{m.name}.json")
        runs.append(result)
    return runs


def _input_names(url: str, model: str) -> list[str]:
    """The model's input names, from its metadata (each takes a [seq_len] token tensor)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{url}/v2/models/{model}", timeout=30) as reply:
        return [i["name"] for i in json.load(reply)["inputs"]]


def _report(
    runs: list[Run], catalog: Catalog, output: Path, reference: bool, console: Console
) -> None:
    from bertserve.report.pipeline import print_report, produce_report

    sources = [(r, f"bertserve demo: {output / 'runs' / (r.label + '.json')}") for r in runs]
    report = produce_report(
        sources,
        catalog,
        output,
        title="bertserve demo: BERT question answering on this machine",
        reference=reference,
    )
    print_report(report, console)
    if not any(r.machine for r in runs):
        console.print(
            "no dollars: rerun with --machine ID (ids: `bertserve report --list-machines`) "
            "to cost these results on a machine like this one",
            highlight=False,
        )
    files = report.files
    console.print(
        f"report: {files.html} and {files.markdown}, {len(files.figures)} plots; raw results "
        f"in {output / 'runs'}",
        highlight=False,
    )
