"""`bertserve plan`: the cheapest configuration of a served model under a latency budget, and
the fleet for a target load. The search lives in `bertserve.plan`; this is its flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.commands.argtypes import positive_float, positive_int
from bertserve.commands.perf import add_data_arguments, add_window_arguments

if TYPE_CHECKING:
    from bertserve.plan.settings import PlanSettings

__all__ = ["HELP", "add_arguments", "run", "settings_from_args"]

HELP = (
    "find the cheapest configuration of a model on a running server (explicit model-control "
    "mode) under a latency budget, and size the fleet for a target load"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("what to plan")
    what.add_argument("-m", "--model-name", dest="model", required=True, help="model name")
    what.add_argument(
        "-u",
        "--url",
        default=None,
        help="server host:port (default 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc); "
        "it must run with --model-control-mode explicit",
    )
    what.add_argument("-i", "--protocol", choices=("http", "grpc"), default="http")
    what.add_argument(
        "--latency-budget-ms",
        type=positive_float,
        default=None,
        metavar="MS",
        help="the latency every point of the plan must keep, at --percentile (default: none, "
        "the highest throughput wins)",
    )
    what.add_argument(
        "--percentile",
        type=positive_int,
        default=99,
        metavar="N",
        help="latency percentile the budget judges: 50, 90, 95 or 99 (default 99)",
    )
    what.add_argument(
        "--machine",
        action="append",
        default=[],
        metavar="ID",
        help="price-catalog id of the machine the server runs on (repeat for each offer of "
        "the same hardware; the cheapest prices the plan). Default: this machine's entry, "
        "guessed from its vCPUs and GPUs. Ids: bertserve report --list-machines",
    )
    what.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="FILE",
        help="a price catalog (TOML) merged over the shipped one",
    )

    fleet = p.add_argument_group("fleet")
    fleet.add_argument(
        "--qps",
        type=positive_float,
        default=None,
        metavar="TARGET",
        help="target load in inferences/s: size the fleet, its cost and autoscaler, and "
        "write Helm values for deploy/helm/bertserve",
    )
    fleet.add_argument(
        "--utilization",
        type=positive_float,
        default=0.7,
        metavar="U",
        help="share of one replica's capacity planned to be used, the rest headroom (default 0.7)",
    )

    search = p.add_argument_group("search")
    search.add_argument(
        "--max-measurements",
        type=positive_int,
        default=100,
        metavar="N",
        help="measure at most N points in all (a candidate running when they run out ends "
        "with what it has; default 100)",
    )
    search.add_argument(
        "--max-minutes",
        type=positive_float,
        default=None,
        metavar="M",
        help="start no new candidate after M minutes (default: no limit)",
    )
    search.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=128,
        metavar="N",
        help="largest max_batch_size tried (default 128)",
    )
    search.add_argument(
        "--max-instances",
        type=positive_int,
        default=8,
        metavar="N",
        help="most instances tried (default 8; at most the vCPUs on CPU, 4 on a GPU)",
    )
    search.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=256,
        metavar="N",
        help="highest concurrency measured (default 256)",
    )
    search.add_argument(
        "--noise-floor",
        type=positive_float,
        default=0.01,
        metavar="FRACTION",
        help="smallest relative gain that counts, whatever the repeated measurement says "
        "(default 0.01)",
    )
    search.add_argument(
        "--no-variants",
        dest="variants",
        action="store_false",
        help="search the model as loaded only, not its siblings or other precisions",
    )

    how = p.add_argument_group("measurement (as bertserve perf)")
    how.add_argument(
        "-b", "--batch-size", type=positive_int, default=1, help="inferences per request"
    )
    add_window_arguments(how)
    add_data_arguments(how)
    p.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("bertserve-plan"),
        metavar="DIR",
        help="folder for config.pbtxt, the report, plan.json and values.yaml "
        "(default ./bertserve-plan)",
    )


def settings_from_args(args: argparse.Namespace) -> PlanSettings:
    """The PlanSettings the flags describe; ValueError names a bad flag."""
    from bertserve.perf.settings import PerfSettings, parse_shapes
    from bertserve.plan.settings import PlanSettings

    url = args.url or ("127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000")
    perf = PerfSettings(
        model=args.model,
        url=url,
        protocol=args.protocol,
        batch_size=args.batch_size,
        window_ms=args.measurement_interval,
        measurement_mode=args.measurement_mode,
        window_requests=args.measurement_request_count,
        max_trials=args.max_trials,
        stability_percent=args.stability_percentage,
        # Windows agree on their average, as perf_analyzer judges by default; the budget
        # judges the percentile of the merged windows.
        percentile=None,
        input_data=args.input_data,
        shapes=parse_shapes(args.shape),
        machine=args.machine[0] if args.machine else None,
    )
    settings = PlanSettings(
        perf=perf,
        budget_ms=args.latency_budget_ms,
        percentile=args.percentile,
        machines=tuple(args.machine),
        catalogs=tuple(args.catalog),
        qps=args.qps,
        utilization=args.utilization,
        output=args.output,
        max_measurements=args.max_measurements,
        max_minutes=args.max_minutes,
        max_concurrency=args.max_concurrency,
        max_batch_size=args.max_batch_size,
        max_instances=args.max_instances,
        noise_floor=args.noise_floor,
        variants=args.variants,
    )
    settings.check()
    return settings


def run(args: argparse.Namespace) -> int:
    import sys

    from bertserve.errors import BertserveError
    from bertserve.plan.display import PlanDisplay, print_summary
    from bertserve.plan.outputs import write_plan
    from bertserve.plan.session import PlanInterrupted, run_plan
    from bertserve.tables import make_console

    console = make_console()
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"bertserve plan: {exc}", file=sys.stderr)
        return 2
    display = PlanDisplay(console, settings.stat)
    try:
        result = run_plan(settings, display.events(), say=display.say)
        files = write_plan(result)
    except PlanInterrupted as exc:
        print(f"bertserve plan: {exc.text()}", file=sys.stderr)
        return 130
    except BertserveError as exc:
        print(f"bertserve plan: {exc}", file=sys.stderr)
        return 1
    print_summary(result, files, console)
    if result.restore_problems:
        return 1
    return 0 if result.search.winner is not None else 3
