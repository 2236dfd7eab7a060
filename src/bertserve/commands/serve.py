"""`bertserve serve`: tritonserver's flags over a Triton-layout model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from bertserve.booleans import parse_bool
from bertserve.commands import triton_flags
from bertserve.settings import (
    API_GROUPS,
    LOG_FORMATS,
    MODEL_CONTROL_MODES,
    Restriction,
    ServerSettings,
    TlsFiles,
)

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
    for service in ("http", "grpc", "metrics"):
        p.add_argument(
            f"--{service}-address",
            default="",
            metavar="ADDRESS",
            help=f"interface for {service} (default: --host)",
        )
    p.add_argument("--reuse-http-port", type=_bool, default=False, metavar="BOOL")
    p.add_argument("--reuse-grpc-port", type=_bool, default=False, metavar="BOOL")
    p.add_argument("--id", default=d.server_id, help="server name in /v2 (default %(default)s)")
    p.add_argument(
        "--http-port",
        type=int,
        default=d.http_port,
        help="HTTP port (default %(default)s; 0 = a free port, logged)",
    )
    p.add_argument(
        "--http-workers",
        type=_natural_int,
        default=d.http_workers,
        metavar="N",
        help="HTTP worker processes: each accepts connections and decodes requests, which run "
        "in the engine's process (more small requests a second where one process's Python is "
        "the limit; docs/architecture.md); 0 = HTTP in the engine's process (default %(default)s)",
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
    p.add_argument("--allow-gpu-metrics", type=_bool, default=True, metavar="BOOL")
    p.add_argument(
        "--allow-client-shm",
        type=_bool,
        default=False,
        metavar="BOOL",
        help="let clients register system (and CUDA) shared memory regions",
    )
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
        "--exit-on-error",
        type=_bool,
        default=d.exit_on_error,
        metavar="BOOL",
        help="stop at start-up when a model fails to load (default %(default)s)",
    )
    p.add_argument(
        "--disable-auto-complete-config",
        action="store_true",
        help="do not complete configs from the model files: each must list everything",
    )
    p.add_argument(
        "--strict-model-config",
        type=_bool,
        nargs="?",
        const=True,
        default=None,
        metavar="BOOL",
        help="deprecated: true = --disable-auto-complete-config",
    )
    p.add_argument(
        "--backend-config",
        action="append",
        default=[],
        type=_backend_setting,
        metavar="[BACKEND,]SETTING=VALUE",
        help="e.g. onnxruntime,default-max-batch-size=8 (repeatable)",
    )
    p.add_argument("--model-config-name", default="", metavar="NAME")
    p.add_argument(
        "--model-load-thread-count",
        type=int,
        default=d.model_load_thread_count,
        metavar="N",
    )
    p.add_argument(
        "--model-load-retry-count", type=int, default=d.model_load_retry_count, metavar="N"
    )
    p.add_argument(
        "--strict-readiness",
        type=_bool,
        default=d.strict_readiness,
        metavar="BOOL",
        help="true (default): ready when every model meant to be loaded is ready (explicitly "
        "unloaded ones are not); false: ready once the server serves",
    )
    p.add_argument(
        "--log-verbose",
        type=int,
        default=0,
        metavar="LEVEL",
        help="1 or more: log every request (model, inferences, latency, queue time) and "
        "every batch executed (requests, inferences, input/infer/output times)",
    )
    p.add_argument("--log-info", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--log-warning", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--log-error", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=d.log_format)
    p.add_argument("--log-file", default="", metavar="PATH")
    p.add_argument(
        "--http-max-input-size",
        type=int,
        default=d.http_max_input_size,
        metavar="BYTES",
        help="largest HTTP request body (default %(default)s)",
    )
    p.add_argument(
        "--grpc-max-message-size",
        type=int,
        default=d.grpc_max_message_size,
        metavar="BYTES",
        help="largest gRPC message either way (default %(default)s, tritonserver's fixed limit)",
    )
    for name, default, meta in (
        ("--grpc-keepalive-time", d.grpc_keepalive_time_ms, "MS"),
        ("--grpc-keepalive-timeout", d.grpc_keepalive_timeout_ms, "MS"),
        ("--grpc-http2-max-pings-without-data", d.grpc_http2_max_pings_without_data, "N"),
        (
            "--grpc-http2-min-recv-ping-interval-without-data",
            d.grpc_http2_min_recv_ping_interval_without_data_ms,
            "MS",
        ),
        ("--grpc-http2-max-ping-strikes", d.grpc_http2_max_ping_strikes, "N"),
        ("--grpc-max-connection-age", d.grpc_max_connection_age_ms, "MS"),
        ("--grpc-max-connection-age-grace", d.grpc_max_connection_age_grace_ms, "MS"),
    ):
        p.add_argument(name, type=int, default=default, metavar=meta)
    p.add_argument(
        "--grpc-keepalive-permit-without-calls",
        type=_bool,
        default=d.grpc_keepalive_permit_without_calls,
        metavar="BOOL",
    )
    p.add_argument(
        "--grpc-infer-response-compression-level",
        choices=("none", "low", "medium", "high"),
        default=d.grpc_infer_response_compression_level,
    )
    limits = p.add_argument_group(
        "limits (what one client may hold; docs/reliability.md)",
    )
    limits.add_argument(
        "--http-max-connections",
        type=_positive_int,
        default=d.http_max_connections,
        metavar="N",
        help="HTTP connections open at once; past it a new one closes the longest-idle "
        "connection, or gets 503 when none is idle (default %(default)s)",
    )
    limits.add_argument(
        "--grpc-max-connections",
        type=_positive_int,
        default=d.grpc_max_connections,
        metavar="N",
        help="gRPC connections open at once (default %(default)s)",
    )
    limits.add_argument(
        "--http-header-timeout-secs",
        type=_positive_float,
        default=d.http_header_timeout_secs,
        metavar="S",
        help="time for a request's line and headers to arrive, else 408 (default %(default)s)",
    )
    limits.add_argument(
        "--http-body-timeout-secs",
        type=_positive_float,
        default=d.http_body_timeout_secs,
        metavar="S",
        help="time for a request's body to arrive after its headers, else 408 "
        "(default %(default)s)",
    )
    limits.add_argument(
        "--http-keep-alive-secs",
        type=_positive_int,
        default=d.http_keep_alive_secs,
        metavar="S",
        help="time a connection may wait for its next request (default %(default)s)",
    )
    limits.add_argument(
        "--http-max-header-size",
        type=_positive_int,
        default=d.http_max_header_size,
        metavar="BYTES",
        help="largest request line plus headers, else 431 (default %(default)s)",
    )
    limits.add_argument(
        "--grpc-stream-max-outstanding",
        type=_positive_int,
        default=d.grpc_stream_max_outstanding,
        metavar="N",
        help="requests a gRPC stream may have read and not yet answered; past it the stream "
        "is not read until its client takes replies (default %(default)s)",
    )
    access = p.add_argument_group("access (as tritonserver's flags; docs/reliability.md)")
    for flag, header in (
        ("--http-restricted-api", "header KEY"),
        ("--grpc-restricted-protocol", "metadata triton-grpc-protocol-KEY"),
    ):
        access.add_argument(
            flag,
            action="append",
            default=[],
            type=_restriction,
            metavar="API[,API]:KEY=VALUE",
            help=f"only requests with {header} = VALUE may call these groups of endpoints "
            f"({', '.join(API_GROUPS)}); repeatable, a group in one rule only",
        )
    for service in ("http", "grpc"):
        name = service.upper() if service == "http" else "gRPC"
        access.add_argument(
            f"--{service}-use-ssl",
            type=_bool,
            default=False,
            metavar="BOOL",
            help=f"serve {name} over TLS (--{service}-server-cert and -key)",
        )
        access.add_argument(
            f"--{service}-use-ssl-mutual",
            type=_bool,
            default=False,
            metavar="BOOL",
            help=f"mutual TLS: {name} clients show a certificate that chains to "
            f"--{service}-root-cert",
        )
        for what, meaning in (
            ("server-cert", "certificate chain"),
            ("server-key", "private key"),
            ("root-cert", "certificates client certificates must chain to"),
        ):
            access.add_argument(
                f"--{service}-{what}", type=Path, metavar="PEM", help=f"{name} TLS: {meaning}"
            )
    limits.add_argument(
        "--default-max-queue-size",
        type=_natural_int,
        default=d.default_max_queue_size,
        metavar="N",
        help="queue bound of every model whose config sets no max_queue_size; requests past "
        "it get 503 with Retry-After at once (default %(default)s; 0 = unbounded, as Triton)",
    )
    p.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=d.exit_timeout_secs,
        help="time to finish in-flight requests on SIGTERM/SIGINT",
    )
    triton_flags.add_arguments(p)
    p.add_argument(
        "--gil-switch-interval-us",
        type=int,
        default=d.gil_switch_interval_us,
        metavar="US",
        help="longest a thread holds the GIL while another waits for it "
        "(sys.setswitchinterval; default %(default)s; 0 = Python's own 5000)",
    )
    p.add_argument(
        "--malloc-keep-mb",
        type=int,
        default=d.malloc_keep_mb,
        metavar="MIB",
        help="freed memory glibc keeps for reuse rather than returning it, so batch buffers "
        "are not faulted in afresh (default %(default)s, at most 2047; 0 = glibc's adaptive "
        "default)",
    )


def _number(kind: type[int] | type[float], minimum: float, words: str) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= minimum:  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected {words}, got '{text}'")
        return value

    return parse


_positive_int = _number(int, 1, "a whole number of 1 or more")
_natural_int = _number(int, 0, "a whole number of 0 or more")
_positive_float = _number(float, 1e-3, "a number of seconds, 0.001 or more")


def _restriction(text: str) -> Restriction:
    try:
        return Restriction.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tls(args: argparse.Namespace, service: str) -> TlsFiles | None:
    """The service's TLS files from its flags (tritonserver's for gRPC, the same for HTTP):
    --X-use-ssl-mutual implies --X-use-ssl and needs the root certificates."""
    flag = f"--{service}"
    mutual = getattr(args, f"{service}_use_ssl_mutual")
    if not (getattr(args, f"{service}_use_ssl") or mutual):
        return None
    cert, key, root = (
        getattr(args, f"{service}_{what}") for what in ("server_cert", "server_key", "root_cert")
    )
    if cert is None or key is None:
        raise SystemExit(f"{flag}-use-ssl needs {flag}-server-cert and {flag}-server-key")
    if mutual and root is None:
        raise SystemExit(
            f"{flag}-use-ssl-mutual needs {flag}-root-cert, the certificates that clients' "
            "must chain to"
        )
    return TlsFiles(cert, key, root, mutual)


def _bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _backend_setting(text: str) -> tuple[str, str, str]:
    """`[<backend>,]<setting>=<value>` -> (backend or "", setting, value)."""
    head, _, tail = text.rpartition(",")
    setting, equals, value = tail.partition("=")
    if not equals or not setting:
        raise argparse.ArgumentTypeError(f"expected [<backend>,]<setting>=<value>, got '{text}'")
    return head, setting, value


#: --backend-config settings bertserve reads; others are refused (they would be silently lost).
BACKEND_SETTINGS = {"default-max-batch-size"}


def _backend_config(entries: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    config: dict[str, dict[str, str]] = {}
    for backend, setting, value in entries:
        if setting not in BACKEND_SETTINGS:
            given = f"{backend + ',' if backend else ''}{setting}={value}"
            raise SystemExit(
                f"--backend-config {given}: bertserve's backends read only "
                f"{', '.join(sorted(BACKEND_SETTINGS))}; model-level settings go in config.pbtxt "
                "parameters"
            )
        if setting == "default-max-batch-size":
            try:
                int(value)
            except ValueError:
                raise SystemExit(
                    f"--backend-config default-max-batch-size must be an integer, got '{value}'"
                ) from None
        config.setdefault(backend, {})[setting] = value
    return config


def _auto_complete(args: argparse.Namespace) -> bool:
    """--disable-auto-complete-config, or the deprecated --strict-model-config."""
    if args.disable_auto_complete_config or args.strict_model_config is None:
        return not args.disable_auto_complete_config
    return not args.strict_model_config


def _deprecation_warnings(args: argparse.Namespace) -> list[str]:
    """tritonserver's words for the deprecated --strict-model-config."""
    if args.strict_model_config is None:
        return []
    warnings = [
        "Warning: '--strict-model-config' has been deprecated! Please use "
        "'--disable-auto-complete-config' instead."
    ]
    if args.disable_auto_complete_config and not args.strict_model_config:
        warnings.append(
            "Warning: Overriding deprecated '--strict-model-config' from False to True in favor "
            "of '--disable-auto-complete-config'!"
        )
    return warnings


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

    if "*" in args.load_model and len(args.load_model) > 1:
        raise SystemExit(
            "Wildcard model name '*' must be the ONLY startup model if specified at all."
        )
    metrics: dict[str, str] = dict(args.metrics_config)
    defaults = ServerSettings()
    quantiles = metrics.get("summary_quantiles")
    return ServerSettings(
        model_repositories=[Path(r) for r in args.model_repository if not is_remote(r)],
        remote_repositories=[r for r in args.model_repository if is_remote(r)],
        model_cache_dir=args.model_cache_dir,
        host=args.host,
        http_address=args.http_address,
        grpc_address=args.grpc_address,
        metrics_address=args.metrics_address,
        reuse_http_port=args.reuse_http_port,
        reuse_grpc_port=args.reuse_grpc_port,
        server_id=args.id,
        http_port=args.http_port,
        http_workers=args.http_workers,
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
        allow_gpu_metrics=args.allow_gpu_metrics,
        allow_client_shm=args.allow_client_shm,
        model_control_mode=args.model_control_mode,
        load_models=list(args.load_model),
        repository_poll_secs=args.repository_poll_secs,
        auto_complete_config=_auto_complete(args),
        backend_config=_backend_config(args.backend_config),
        model_config_name=args.model_config_name,
        exit_on_error=args.exit_on_error,
        model_load_thread_count=args.model_load_thread_count,
        model_load_retry_count=args.model_load_retry_count,
        strict_readiness=args.strict_readiness,
        log_verbose=args.log_verbose,
        log_info=args.log_info,
        log_warning=args.log_warning,
        log_error=args.log_error,
        log_format=args.log_format,
        log_file=args.log_file,
        http_max_input_size=args.http_max_input_size,
        grpc_max_message_size=args.grpc_max_message_size,
        grpc_keepalive_time_ms=args.grpc_keepalive_time,
        grpc_keepalive_timeout_ms=args.grpc_keepalive_timeout,
        grpc_keepalive_permit_without_calls=args.grpc_keepalive_permit_without_calls,
        grpc_http2_max_pings_without_data=args.grpc_http2_max_pings_without_data,
        grpc_http2_min_recv_ping_interval_without_data_ms=(
            args.grpc_http2_min_recv_ping_interval_without_data
        ),
        grpc_http2_max_ping_strikes=args.grpc_http2_max_ping_strikes,
        grpc_max_connection_age_ms=args.grpc_max_connection_age,
        grpc_max_connection_age_grace_ms=args.grpc_max_connection_age_grace,
        grpc_infer_response_compression_level=args.grpc_infer_response_compression_level,
        http_max_connections=args.http_max_connections,
        grpc_max_connections=args.grpc_max_connections,
        http_header_timeout_secs=args.http_header_timeout_secs,
        http_body_timeout_secs=args.http_body_timeout_secs,
        http_keep_alive_secs=args.http_keep_alive_secs,
        http_max_header_size=args.http_max_header_size,
        grpc_stream_max_outstanding=args.grpc_stream_max_outstanding,
        default_max_queue_size=args.default_max_queue_size,
        http_restricted_apis=_one_rule_per_group(args.http_restricted_api, "--http-restricted-api"),
        grpc_restricted_protocols=_one_rule_per_group(
            args.grpc_restricted_protocol, "--grpc-restricted-protocol"
        ),
        http_tls=_tls(args, "http"),
        grpc_tls=_tls(args, "grpc"),
        exit_timeout_secs=args.exit_timeout_secs,
        gil_switch_interval_us=args.gil_switch_interval_us,
        malloc_keep_mb=args.malloc_keep_mb,
    )


def _one_rule_per_group(rules: list[Restriction], flag: str) -> list[Restriction]:
    try:
        Restriction.by_api(rules)
    except ValueError as exc:
        raise SystemExit(f"{flag}: {exc}") from None
    return rules


def run(args: argparse.Namespace) -> int:
    import asyncio

    import uvloop

    from bertserve.server import serve
    from bertserve.server_log import configure_logging

    notes = triton_flags.check(args)
    settings = settings_from_args(args)
    if settings.gil_switch_interval_us < 0:
        raise SystemExit("--gil-switch-interval-us must be 0 (Python's default) or more")
    if settings.gil_switch_interval_us:
        sys.setswitchinterval(settings.gil_switch_interval_us / 1e6)
    from bertserve.malloc import MAX_KEEP_MB, keep_freed_memory

    if not 0 <= settings.malloc_keep_mb <= MAX_KEEP_MB:
        raise SystemExit(
            f"--malloc-keep-mb must be 0 (glibc's default) to {MAX_KEEP_MB} "
            "(glibc takes the size in bytes as a C int)"
        )
    if settings.malloc_keep_mb:
        keep_freed_memory(settings.malloc_keep_mb << 20)
    configure_logging(settings)
    log = logging.getLogger("bertserve.serve")
    for warning in _deprecation_warnings(args):
        log.warning("%s", warning)
    for note in notes:
        log.info("%s", note)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings))
