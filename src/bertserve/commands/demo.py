"""`bertserve demo`: build a small repository, serve it, sweep it, ask and evaluate it through
its QA pipeline, price it and say how it compares with the reference benchmark; one command,
no network, no GPU. Heavy imports (the builder, the load generator, the report) wait until
`run`.
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
    from bertserve.cost.host import MachineGuess
    from bertserve.launch import ServerProcess
    from bertserve.perf.results import Run
    from bertserve.report.pipeline import WrittenReport

__all__ = ["HELP", "QUESTION", "DemoModel", "add_arguments", "plan", "run"]

HELP = (
    "build small BERT QA models, serve them, sweep them with bertserve perf, ask and evaluate "
    "them, and price them against the reference benchmark (./bertserve-report: report.md, "
    "report.html, plots, raw JSON); a few minutes on a laptop"
)

_READY_TIMEOUT_S = 180.0
#: The question the demo asks about the passage it ships (src/bertserve/data/passage.txt).
QUESTION = "Who designed the lighthouse?"


@dataclass(frozen=True)
class DemoModel:
    """A model the demo builds (from a builder preset) and then measures at one setting."""

    name: str
    preset: str
    device: str
    seq_len: int
    #: Measurement window: long enough for a few dozen requests of this model at concurrency 1.
    window_ms: float = 1000.0
    #: Loads to sweep when --concurrency-range is not given (None: the demo's default).
    concurrency: str | None = None
    #: Inferences per request (perf_analyzer's -b).
    batch_size: int = 1
    #: The run's label when one model is measured at two settings.
    label: str = ""
    #: Measured at the reference benchmark's setting: --concurrency-range does not apply.
    reference_setting: bool = False

    @property
    def run_label(self) -> str:
        return self.label or self.name


def plan(*, quick: bool, gpu: bool, seq_len: int) -> list[DemoModel]:
    """The models a demo run builds and sweeps."""
    if quick:
        return [DemoModel("bert_tiny_onnx_cpu", "tiny", "cpu", 32, window_ms=400.0)]
    models = [
        DemoModel("bert_tiny_onnx_cpu", "tiny", "cpu", 128),
        DemoModel("bert_distill_onnx_cpu", "distilbert", "cpu", seq_len, window_ms=2000.0),
        DemoModel("bert_distill_onnx_cpu_int8", "distilbert", "cpu", seq_len, window_ms=2000.0),
        # The reference's own point for its DistilBERT CPU row: sequence 384, 2 inferences a
        # request, concurrency 4 (its headline 24 inferences/s was measured there), so the
        # verdict compares like with like. The ONNX model takes any length up to 512.
        DemoModel(
            "bert_distill_onnx_cpu_int8",
            "distilbert",
            "cpu",
            384,
            window_ms=3000.0,
            concurrency="4",
            batch_size=2,
            label="bert_distill_onnx_cpu_int8 seq 384 batch 2",
            reference_setting=True,
        ),
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
        default=Path("model_repository"),
        metavar="DIR",
        help="build the models here and keep them, with their QA pipelines, for `bertserve "
        "serve`, `ask` and `eval` afterwards; models already there are reused "
        "(default ./model_repository)",
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
        help="sequence length of the DistilBERT sweeps (default 128; the reference's own "
        "setting, 384 with batches of 2, is measured as well)",
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
        help="price-catalog id of the machine to price the results as (see "
        "`bertserve report --list-machines`); default: the catalog entry of this machine's "
        "kind and size, named as an assumption in the output",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="put the published reference benchmark's deployments in the report's tables",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from bertserve.errors import BertserveError
    from bertserve.qa.client import ClientError
    from bertserve.tables import make_console

    console = make_console()
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
    except _MissingExtra as exc:
        print(exc, file=sys.stderr)
        return 2
    except (BertserveError, ClientError) as exc:
        print(f"bertserve demo: {exc}", file=sys.stderr)
        return 1


class _MissingExtra(Exception):
    """Models must be built and the build extra is not installed."""


def _gpu_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install 'bertserve[build]')"
    import torch

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False on this machine"
    return None


def _demo(args: argparse.Namespace, console: Console) -> int:
    from bertserve.cost.catalog import load_catalog
    from bertserve.cost.host import guess_machine, this_host
    from bertserve.report.pipeline import print_verdict

    catalog = load_catalog()
    guess = None
    if args.machine is not None:
        machine_id: str | None = catalog[args.machine].id  # fail now, not after the sweep
    else:
        guess = guess_machine(catalog, this_host())
        machine_id = guess.machine.id if guess.machine is not None else None
    models = plan(quick=args.quick, gpu=args.gpu, seq_len=args.seq_len)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    repo: Path = args.repository
    pipeline = f"{_qa_model(models).name}_qa"
    started = time.monotonic()
    server = None
    try:
        console.rule("[bold]1/5 build the models")
        random_weights = _build(models, repo, args.weights, console)
        console.rule("[bold]2/5 start the server")
        server = _start_server(repo, output / "server.log", console)
        console.rule("[bold]3/5 measure")
        runs = _sweep(models, server.http_url, args, machine_id, random_weights, output, console)
        console.rule("[bold]4/5 question answering")
        _question_answering(server.http_url, pipeline, console)
    finally:
        if server is not None:
            _stop_server(server, console)
    console.rule("[bold]5/5 report")
    report = _report(runs, catalog, output, args.reference, guess, console)
    console.print(
        f"next: bertserve serve --model-repository {repo}, then bertserve ask -m {pipeline} "
        f'"{QUESTION}" --context src/bertserve/data/passage.txt (see README.md)',
        markup=False,
        highlight=False,
    )
    console.print(f"demo done in {time.monotonic() - started:.0f} s", highlight=False)
    print_verdict(report, console)
    return 0


def _qa_model(models: list[DemoModel]) -> DemoModel:
    """The model the demo asks questions through: DistilBERT INT8, the tiny one in --quick."""
    int8 = [m for m in models if m.name == "bert_distill_onnx_cpu_int8"]
    return int8[0] if int8 else models[0]


def _build(models: list[DemoModel], repo: Path, weights: str, console: Console) -> dict[str, bool]:
    """Build the models (and their QA pipelines) missing from `repo`; which have random
    weights, by name."""
    from bertserve.builder import default_weights
    from bertserve.builder.extra import missing_build_extra

    random_weights: dict[str, bool] = {}
    by_preset: dict[str, dict[str, DemoModel]] = {}
    for m in models:
        by_preset.setdefault(m.preset, {}).setdefault(m.name, m)
    for preset, group in by_preset.items():
        chosen = default_weights(preset) if preset == "tiny" else weights
        for name in group:
            random_weights[name] = chosen == "random"
        missing = [
            m
            for m in group.values()
            if not (repo / m.name / "config.pbtxt").is_file()
            or not (repo / f"{m.name}_qa" / "config.pbtxt").is_file()
        ]
        if not missing:
            console.print(f"{preset}: reusing {', '.join(group)} from {repo}", highlight=False)
            continue
        extra = missing_build_extra("demo")
        if extra:
            raise _MissingExtra(extra)
        from bertserve.builder import build_preset
        from bertserve.builder.progress import StageLines

        t0 = time.monotonic()
        outcome = build_preset(
            preset,
            repo,
            StageLines(console),
            weights=chosen,
            seq_len=missing[0].seq_len if preset != "tiny" else None,
            only=[m.name for m in missing],
            force=True,
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
    machine: str | None,
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
    for i, m in enumerate(models, 1):
        chosen = m.concurrency if m.reference_setting else args.concurrency_range
        loads = chosen or m.concurrency or default_range
        console.print(
            f"[bold]sweep {i}/{len(models)}: {m.run_label}[/] ({m.device}, seq {m.seq_len}, "
            f"batch {m.batch_size}, concurrency {loads})",
            highlight=False,
        )
        filename = m.run_label.replace(" ", "_")
        settings = PerfSettings(
            model=m.name,
            url=url,
            batch_size=m.batch_size,
            concurrency=parse_range(loads, integer=True, flag="--concurrency-range"),
            window_ms=m.window_ms,
            max_trials=5 if args.quick else 6,
            stability_percent=25.0 if args.quick else 10.0,
            input_data="random",
            shapes={name: (m.seq_len,) for name in _input_names(url, m.name)},
            csv_path=str(raw / f"{filename}.csv"),
            json_path=None,
            label=m.run_label,
            machine=machine,
        )
        result = replace(
            measure(settings, console),
            random_weights=random_weights.get(m.name, False),
        )
        write_run(result, raw / f"{filename}.json")
        runs.append(result)
    return runs


def _input_names(url: str, model: str) -> list[str]:
    """The model's input names, from its metadata (each takes a [seq_len] token tensor)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{url}/v2/models/{model}", timeout=30) as reply:
        return [i["name"] for i in json.load(reply)["inputs"]]


def _question_answering(url: str, pipeline: str, console: Console) -> None:
    """Ask the shipped passage one question, then score the shipped SQuAD sample."""
    from bertserve.commands.eval import describe, evaluate, print_scores
    from bertserve.qa.client import AnswerClient
    from bertserve.qa.evaluation import compare
    from bertserve.qa.squad import load_squad, passage_path, sample_path

    passage = passage_path().read_text(encoding="utf-8")
    with AnswerClient(url, pipeline) as client:
        [answer] = client.ask([QUESTION], [passage])
    shown = "(no answer)" if answer.is_impossible else repr(answer.text)
    console.print(
        f"{pipeline}: {QUESTION!r} about {passage_path().name} -> {shown}, score "
        f"{answer.score:.3f}",
        markup=False,
        highlight=False,
    )
    version, examples = load_squad(sample_path())
    console.print(
        f"SQuAD {version} sample shipped with bertserve: {describe(examples)}", highlight=False
    )
    results = evaluate(console, url, [pipeline], examples, batch_size=8, concurrency=4)
    print_scores(console, compare(results))


def _report(
    runs: list[Run],
    catalog: Catalog,
    output: Path,
    reference: bool,
    guess: MachineGuess | None,
    console: Console,
) -> WrittenReport:
    from bertserve.builder.presets import model_kind
    from bertserve.report.pipeline import print_report, produce_report

    sources = [
        (r, f"bertserve demo: {output / 'runs' / (r.label.replace(' ', '_') + '.json')}")
        for r in runs
    ]
    report = produce_report(
        sources,
        catalog,
        output,
        title="bertserve demo: BERT question answering on this machine",
        reference=reference,
        guess=guess,
        kind_of=model_kind,
    )
    print_report(report, console)
    files = report.files
    console.print(
        f"report: {files.html} and {files.markdown}, {len(files.figures)} plots; raw results "
        f"in {output / 'runs'}",
        highlight=False,
    )
    return report
