"""`bertserve perf`: perf_analyzer's flags and method, from Python. Heavy imports (numpy,
rich, the transports) wait until `run`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bertserve.commands.argtypes import positive_float, positive_int

if TYPE_CHECKING:
    from bertserve.perf.settings import PerfSettings

__all__ = [
    "HELP",
    "add_arguments",
    "add_data_arguments",
    "add_window_arguments",
    "run",
    "settings_from_args",
]

HELP = (
    "measure a served model as perf_analyzer does (same flags, windows, stability rule and "
    "CSV), over HTTP or gRPC, with a progress display and a summary table"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("what to measure")
    what.add_argument("-m", "--model-name", dest="model", required=True, help="model name")
    what.add_argument("-x", "--model-version", default="", help="model version (default: latest)")
    what.add_argument(
        "-u",
        "--url",
        default=None,
        help="server host:port (default 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc)",
    )
    what.add_argument("-i", "--protocol", choices=("http", "grpc"), default="http")
    what.add_argument(
        "-b",
        "--batch-size",
        type=positive_int,
        default=1,
        help="inferences per request (default 1)",
    )

    load = p.add_argument_group("load")
    load.add_argument(
        "--concurrency-range",
        default="1",
        metavar="START:END:STEP",
        help="closed loop: requests kept in flight (default 1)",
    )
    load.add_argument(
        "--request-rate-range",
        default=None,
        metavar="START:END:STEP",
        help="open loop: requests per second, sent on schedule",
    )
    load.add_argument(
        "--request-distribution",
        choices=("constant", "poisson"),
        default="constant",
        help="gaps between scheduled sends (default constant)",
    )
    mode = load.add_mutually_exclusive_group()
    mode.add_argument(
        "-a",
        "--async",
        dest="asynchronous",
        action="store_true",
        default=True,
        help="keep requests in flight asynchronously (default)",
    )
    mode.add_argument(
        "--sync",
        dest="asynchronous",
        action="store_false",
        help="accepted for perf_analyzer command lines: one asyncio client keeps "
        "the same number of requests in flight either way",
    )
    load.add_argument(
        "--max-threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="accepted for perf_analyzer command lines and ignored: one asyncio "
        "thread drives every connection",
    )
    load.add_argument(
        "--max-in-flight",
        type=positive_int,
        default=256,
        metavar="N",
        help="request-rate mode: outstanding requests beyond which sends are "
        "dropped and counted (default 256)",
    )

    how = p.add_argument_group("measurement")
    add_window_arguments(how)
    how.add_argument(
        "--percentile",
        type=_percentile,
        default=None,
        metavar="N",
        help="judge stability and -l on this latency percentile (default: average)",
    )
    how.add_argument(
        "-l",
        "--latency-threshold",
        type=positive_float,
        default=0.0,
        metavar="MS",
        help="stop the sweep after a load whose latency exceeds MS",
    )

    server = p.add_argument_group("server")
    server.add_argument(
        "-H",
        dest="http_headers",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="HTTP header sent with every request (repeatable; ignored over gRPC, as "
        "perf_analyzer does)",
    )
    server.add_argument(
        "--collect-metrics",
        action="store_true",
        help="scrape the server's GPU metrics while each load is measured and write them "
        "to the -f CSV (needs --verbose-csv, as perf_analyzer does)",
    )
    server.add_argument(
        "--metrics-url",
        default="localhost:8002/metrics",
        help="where the server serves its metrics (default localhost:8002/metrics)",
    )
    server.add_argument(
        "--metrics-interval",
        type=positive_float,
        default=1000.0,
        metavar="MS",
        help="milliseconds between metrics scrapes within a load level (default 1000)",
    )
    server.add_argument(
        "--shared-memory",
        choices=("none", "system", "cuda"),
        default="none",
        help="where request tensors travel: none (in the requests, the default) or system "
        "(POSIX shared memory regions registered with the server, as perf_analyzer places "
        "them); cuda is perf_analyzer's GPU variant, which bertserve perf does not drive",
    )
    server.add_argument(
        "--output-shared-memory-size",
        type=int,
        default=100 * 1024,
        metavar="BYTES",
        help="bytes of each output's region with --shared-memory system (default 102400)",
    )

    data = p.add_argument_group("request data")
    add_data_arguments(data)
    data.add_argument(
        "-z",
        "--zero-input",
        action="store_true",
        help="zero-filled input data (same as --input-data zero)",
    )
    data.add_argument(
        "--string-length",
        type=positive_int,
        default=128,
        help="length of generated BYTES elements (default 128)",
    )

    out = p.add_argument_group("output")
    out.add_argument(
        "-f",
        "--latency-report-file",
        dest="csv",
        default=None,
        metavar="FILE.csv",
        help="write perf_analyzer's CSV (same columns and units)",
    )
    out.add_argument(
        "--json",
        default=None,
        metavar="FILE.json",
        help="write every field of every point, and the run, as bertserve JSON",
    )
    out.add_argument(
        "--verbose-csv",
        action="store_true",
        help="the -f CSV also gets perf_analyzer's extra columns: Avg latency, "
        "request/response, response wait (and the GPU columns with --collect-metrics)",
    )
    out.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="print every measurement window, not only each load's result",
    )
    out.add_argument("--label", default="", help="run label in reports (default: model name)")
    out.add_argument(
        "--machine",
        default=None,
        metavar="ID",
        help="price-catalog id of the serving machine, recorded for `bertserve report`",
    )


def add_window_arguments(group: argparse._ArgumentGroup) -> None:
    """How a load level is measured: windows, their mode, trials and the stability rule
    (`bertserve plan` measures with the same flags)."""
    group.add_argument(
        "-p",
        "--measurement-interval",
        type=positive_float,
        default=5000.0,
        metavar="MS",
        help="measurement window in ms (default 5000)",
    )
    group.add_argument(
        "--measurement-mode", choices=("time_windows", "count_windows"), default="time_windows"
    )
    group.add_argument(
        "--measurement-request-count",
        type=positive_int,
        default=50,
        metavar="N",
        help="count_windows: requests per window (default 50)",
    )
    group.add_argument(
        "-r",
        "--max-trials",
        type=positive_int,
        default=10,
        metavar="N",
        help="windows per load before giving up on stability (default 10)",
    )
    group.add_argument(
        "-s",
        "--stability-percentage",
        type=positive_float,
        default=10.0,
        metavar="PCT",
        help="allowed spread of 3 consecutive windows (default 10)",
    )


def add_data_arguments(group: argparse._ArgumentGroup) -> None:
    """What the requests carry: tensor values and variable input shapes."""
    group.add_argument(
        "--input-data",
        default="random",
        metavar="zero|random|FILE.json",
        help="tensor values, or perf_analyzer's input-data JSON (default random)",
    )
    group.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="dimensions, without batch, of a variable-shape input, e.g. "
        "input_ids:128 (repeatable)",
    )


def settings_from_args(args: argparse.Namespace) -> PerfSettings:
    """The PerfSettings the flags describe; ValueError names a bad flag."""
    from bertserve.perf.settings import PerfSettings, parse_range, parse_shapes

    shapes = parse_shapes(args.shape)
    headers = []
    for text in args.http_headers:
        name, sep, value = text.partition(":")
        if not sep or not name.strip() or any(c in text for c in "\r\n"):
            raise ValueError(f"-H {text!r}: write NAME:VALUE, e.g. -H 'Authorization:Bearer x'")
        headers.append((name.strip(), value.strip()))
    if args.collect_metrics and not args.verbose_csv:
        raise ValueError("--collect-metrics writes to the verbose CSV: add --verbose-csv")
    if args.shared_memory == "cuda":
        raise ValueError(
            "--shared-memory cuda: bertserve perf places tensors in system shared memory only "
            "(--shared-memory system); perf_analyzer drives CUDA regions from a GPU client"
        )
    if args.output_shared_memory_size < 1:
        raise ValueError("--output-shared-memory-size must be at least 1 byte")
    rate = None
    if args.request_rate_range is not None:
        rate = parse_range(args.request_rate_range, integer=False, flag="--request-rate-range")
    url = args.url or ("127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000")
    return PerfSettings(
        model=args.model,
        model_version=args.model_version,
        url=url,
        protocol=args.protocol,
        batch_size=args.batch_size,
        concurrency=parse_range(args.concurrency_range, integer=True, flag="--concurrency-range"),
        request_rate=rate,
        distribution=args.request_distribution,
        asynchronous=args.asynchronous,
        window_ms=args.measurement_interval,
        measurement_mode=args.measurement_mode,
        window_requests=args.measurement_request_count,
        max_trials=args.max_trials,
        stability_percent=args.stability_percentage,
        percentile=args.percentile,
        latency_threshold_ms=args.latency_threshold,
        input_data="zero" if args.zero_input else args.input_data,
        shapes=shapes,
        string_length=args.string_length,
        max_in_flight=args.max_in_flight,
        csv_path=args.csv,
        json_path=args.json,
        label=args.label,
        machine=args.machine,
        http_headers=tuple(headers),
        shared_memory=args.shared_memory,
        output_shared_memory_size=args.output_shared_memory_size,
        verbose=args.verbose > 0,
        verbose_csv=args.verbose_csv,
        collect_metrics=args.collect_metrics,
        metrics_url=args.metrics_url,
        metrics_interval_ms=args.metrics_interval,
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from bertserve.errors import BertserveError
    from bertserve.perf.session import measure
    from bertserve.tables import make_console

    console = make_console()
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"bertserve perf: {exc}", file=sys.stderr)
        return 2
    try:
        run_record = measure(settings, console)
    except BertserveError as exc:
        print(f"bertserve perf: {exc}", file=sys.stderr)
        return 1
    if not run_record.measurements:
        return 1
    unstable = [m.load for m in run_record.measurements if not m.extras.get("stable", 1.0)]
    if unstable:
        # perf_analyzer's exit status when a measurement does not stabilize.
        print(
            f"bertserve perf: no stable measurement at {', '.join(f'{x:g}' for x in unstable)} "
            "(results written anyway); use longer windows (-p) or a larger -s",
            file=sys.stderr,
        )
        return 2
    return 0


def _percentile(text: str) -> int:
    value = positive_int(text)
    if value > 99:
        raise argparse.ArgumentTypeError(f"a percentile is 1 to 99, not {value}")
    return value
