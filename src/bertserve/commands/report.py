"""`bertserve report`: turn measurements into latency, throughput and dollars per million
inferences. Heavy imports (matplotlib, rich) wait until `run`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.commands.argtypes import positive_float

if TYPE_CHECKING:
    from rich.console import Console

    from bertserve.cost.catalog import Catalog

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Report latency, throughput and cost per million inferences from bertserve JSON results "
    "and perf_analyzer CSV files (Markdown, self-contained HTML, PNG plots)."
)

_STATS = ("avg", "p50", "p90", "p95", "p99")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="PATH[:label=NAME][:machine=ID][:batch=N][:random_weights=yes|no]",
        help="a bertserve JSON result or a perf_analyzer CSV (unchanged), tagged with a "
        "label and a price-catalog machine id; batch= is the -b a CSV was measured with. "
        "Repeat for each deployment. Example: "
        "'perf.csv:label=TRT T4:machine=gcp-n1-standard-4-t4:batch=2'",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="include the reference benchmark (Triton GKE app, BERT QA) from the packaged "
        "CSVs and reproduce its README table and ~163x verdict",
    )
    parser.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="FILE",
        help="a price catalog (TOML) merged over the shipped one; an entry replaces the "
        "shipped entry of the same id. Repeatable",
    )
    parser.add_argument(
        "--percentile",
        choices=_STATS,
        default="p99",
        help="latency statistic that plots show and budgets judge (default: p99)",
    )
    parser.add_argument(
        "--latency-budget-ms",
        type=positive_float,
        default=None,
        metavar="MS",
        help="pick each deployment's best point as the highest throughput whose latency "
        "(at --percentile) is within MS; default: no budget",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("bertserve-report"),
        metavar="DIR",
        help="directory for report.md, report.html and the PNG plots (default: ./bertserve-report)",
    )
    parser.add_argument("--title", default="bertserve report", help="report title")
    parser.add_argument(
        "--list-machines",
        action="store_true",
        help="print the price catalog (after --catalog merges) and exit",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from bertserve.builder.presets import model_kind
    from bertserve.cost.catalog import load_catalog
    from bertserve.errors import BertserveError
    from bertserve.perf.results import Run
    from bertserve.report.inputs import load_input, parse_input_spec
    from bertserve.report.pipeline import print_report, print_verdict, produce_report
    from bertserve.tables import make_console

    console = make_console()

    def fail(message: str) -> int:
        print(f"bertserve report: {message}", file=sys.stderr)
        return 2

    try:
        catalog = load_catalog(*args.catalog)
        if args.list_machines:
            _print_catalog(catalog, console)
            return 0
        if not args.input and not args.reference:
            return fail("give at least one --input FILE, or --reference")
        runs: list[tuple[Run, str]] = []
        for spec_text in args.input:
            spec = parse_input_spec(spec_text)
            runs.append((load_input(spec), str(spec.path)))
        report = produce_report(
            runs,
            catalog,
            args.output,
            title=args.title,
            reference=args.reference,
            stat=args.percentile,
            budget_ms=args.latency_budget_ms,
            kind_of=model_kind,
        )
    except BertserveError as exc:
        return fail(str(exc))
    sentence = report.reference_sentence()
    print_report(report, console, (sentence,) if sentence else ())
    files = report.files
    console.print(
        f"wrote {files.markdown}, {files.html} and {len(files.figures)} PNG plots",
        highlight=False,
    )
    print_verdict(report, console)
    sys.stdout.flush()
    return 0


def _print_catalog(catalog: Catalog, console: Console) -> None:
    from bertserve.tables import print_table

    rows = [(m.id, m.name, f"{m.price_per_hour:.4g}", m.source, m.as_of) for m in catalog.values()]
    print_table(
        console,
        ("id", "name", "$/hour", "source", "as of"),
        rows,
        (False, False, True, False, False),
        title=f"Price catalog ({catalog.currency} per hour, on-demand)",
    )
