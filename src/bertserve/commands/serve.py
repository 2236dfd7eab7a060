"""`bertserve serve`: tritonserver's flags over a Triton-layout model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bertserve.booleans import parse_bool
from bertserve.settings import MODEL_CONTROL_MODES, ServerSettings

HELP = "serve a Triton-layout model repository over Triton's HTTP/REST and gRPC protocols"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ServerSettings()
    p.add_argument(
        "--model-repository",
        "--model-store",
        dest="model_repository",
        action="append",
        required=True,
        metavar="PATH_OR_URL",
        help="model repository: a folder, or a bucket URL (s3://bucket/path, "
        "s3://host:port/bucket/path for an S3-compatible store, gs://bucket/path, "
        "az://container/path; needs bertserve[storage]); repeatable",
    )
    p.add_argument(
        "--model-cache-dir",
        type=Path,
        default=None,
        metavar="PATH",
        help="where bucket repositories are mirrored (default $BERTSERVE_CACHE_DIR, else "
        "~/.cache/bertserve/repositories); unchanged objects are not fetched again",
    )
    p.add_argument(
        "--host",
        default=d.host,
        help="interface to bind (default %(default)s; 0.0.0.0 exposes the server)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=d.http_port,
        help="HTTP port (default %(default)s; 0 = a free port, logged)",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=d.grpc_port,
        help="gRPC port (default %(default)s; 0 = a free port, logged)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=d.metrics_port,
        help="Prometheus metrics port (default %(default)s; 0 = a free port)",
    )
    p.add_argument("--allow-http", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--allow-grpc", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--allow-metrics", type=_bool, default=True, metavar="BOOL")
    p.add_argument(
        "--allow-cpu-metrics",
        type=_bool,
        default=True,
        metavar="BOOL",
        help="serve nv_cpu_utilization and nv_cpu_memory_*_bytes with the metrics",
    )
    p.add_argument(
        "--metrics-config",
        action="append",
        type=_metrics_config,
        default=[],
        metavar="KEY=VALUE",
        help="as tritonserver's: summary_latencies=true adds latency summaries "
        "(nv_inference_*_summary_us, quantiles over each model's last 60 s), "
        "summary_quantiles=0.5:0.05,0.99:0.001 picks their quantiles, "
        "counter_latencies=false drops the nv_inference_*_duration_us counters (repeatable)",
    )
    p.add_argument(
        "--model-control-mode", choices=MODEL_CONTROL_MODES, default=d.model_control_mode
    )
    p.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="with --model-control-mode explicit: model to load at start (repeatable; '*' = all)",
    )
    p.add_argument("--repository-poll-secs", type=float, default=d.repository_poll_secs)
    p.add_argument(
        "--strict-model-config",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="refuse configs without inputs/outputs",
    )
    p.add_argument(
        "--log-verbose",
        type=int,
        default=0,
        metavar="LEVEL",
        help="1 or more: log every request (model, inferences, latency, queue time) and "
        "every batch executed (requests, inferences, input/infer/output times)",
    )
    p.add_argument(
        "--http-max-input-size",
        type=int,
        default=d.http_max_input_size,
        metavar="BYTES",
        help="largest HTTP request body (default %(default)s)",
    )
    p.add_argument(
        "--grpc-max-message-size", type=int, default=d.grpc_max_message_size, metavar="BYTES"
    )
    p.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=d.exit_timeout_secs,
        help="time to finish in-flight requests on SIGTERM/SIGINT",
    )
    p.add_argument(
        "--gil-switch-interval-us",
        type=int,
        default=d.gil_switch_interval_us,
        metavar="US",
        help="longest a thread holds the GIL while another waits for it "
        "(sys.setswitchinterval; default %(default)s; 0 = Python's own 5000)",
    )


def _bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_METRICS_CONFIG_KEYS = ("summary_latencies", "summary_quantiles", "counter_latencies")


def _metrics_config(text: str) -> tuple[str, str]:
    """KEY=VALUE of --metrics-config, checked here so a bad one is a usage error."""
    from bertserve.metrics import parse_quantiles

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or key not in _METRICS_CONFIG_KEYS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write KEY=VALUE with KEY one of {', '.join(_METRICS_CONFIG_KEYS)}"
        )
    try:
        parse_quantiles(value) if key == "summary_quantiles" else parse_bool(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{key}: {exc}") from None
    return key, value


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    from bertserve.metrics import parse_quantiles
    from bertserve.repository.remote import is_remote

    metrics: dict[str, str] = dict(args.metrics_config)
    defaults = ServerSettings()
    quantiles = metrics.get("summary_quantiles")
    return ServerSettings(
        model_repositories=[Path(r) for r in args.model_repository if not is_remote(r)],
        remote_repositories=[r for r in args.model_repository if is_remote(r)],
        model_cache_dir=args.model_cache_dir,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_http=args.allow_http,
        allow_grpc=args.allow_grpc,
        allow_metrics=args.allow_metrics,
        allow_cpu_metrics=args.allow_cpu_metrics,
        metrics_counter_latencies=parse_bool(metrics.get("counter_latencies", "true")),
        metrics_summary_latencies=parse_bool(metrics.get("summary_latencies", "false")),
        metrics_summary_quantiles=(
            parse_quantiles(quantiles) if quantiles else defaults.metrics_summary_quantiles
        ),
        model_control_mode=args.model_control_mode,
        load_models=list(args.load_model),
        repository_poll_secs=args.repository_poll_secs,
        strict_model_config=args.strict_model_config,
        log_verbose=args.log_verbose,
        http_max_input_size=args.http_max_input_size,
        grpc_max_message_size=args.grpc_max_message_size,
        exit_timeout_secs=args.exit_timeout_secs,
        gil_switch_interval_us=args.gil_switch_interval_us,
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    import uvloop

    from bertserve.server import serve

    settings = settings_from_args(args)
    if settings.gil_switch_interval_us < 0:
        raise SystemExit("--gil-switch-interval-us must be 0 (Python's default) or more")
    if settings.gil_switch_interval_us:
        sys.setswitchinterval(settings.gil_switch_interval_us / 1e6)
    logging.basicConfig(
        level=logging.INFO if settings.log_verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings))
