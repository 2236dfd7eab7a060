"""Typed settings, one object per scope. CLI flags map onto these fields one to one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "API_GROUPS",
    "GRPC_MAX_MESSAGE",
    "LOG_FORMATS",
    "MODEL_CONTROL_MODES",
    "Restriction",
    "ServerSettings",
    "TlsFiles",
]

MODEL_CONTROL_MODES = ("none", "explicit", "poll")
LOG_FORMATS = ("default", "ISO8601")
#: tritonserver's gRPC limit on a message, either way (INT32_MAX).
GRPC_MAX_MESSAGE = 2**31 - 1

#: Triton's groups of endpoints, which --http-restricted-api / --grpc-restricted-protocol
#: name (trace and logging have no endpoints here: restricting them restricts nothing).
API_GROUPS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)


@dataclass(frozen=True, slots=True)
class Restriction:
    """Endpoint groups only a request carrying header `key` with `value` may call (Triton's
    `API[,API]:KEY=VALUE`; over gRPC the header is `triton-grpc-protocol-<key>`)."""

    apis: frozenset[str]
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Restriction:
        apis, colon, header = text.partition(":")
        key, equals, value = header.partition("=")
        names = frozenset(a.strip() for a in apis.split(",") if a.strip())
        if not colon or not equals or not names or not key.strip():
            raise ValueError(f"expected API[,API]:KEY=VALUE, got '{text}'")
        unknown = sorted(names - set(API_GROUPS))
        if unknown:
            raise ValueError(
                f"unknown API group(s) {', '.join(unknown)}: choose from {', '.join(API_GROUPS)}"
            )
        return cls(names, key.strip().lower(), value)

    @staticmethod
    def by_api(restrictions: list[Restriction]) -> dict[str, Restriction]:
        """Each restricted group and its rule; a group in two rules is an error (as Triton)."""
        rules: dict[str, Restriction] = {}
        for rule in restrictions:
            for api in rule.apis:
                if api in rules:
                    raise ValueError(f"API group '{api}' is restricted twice: name it once")
                rules[api] = rule
        return rules


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A service's TLS: its certificate chain and key (PEM), and for mutual TLS the root
    certificates its clients' certificates must chain to."""

    cert: Path
    key: Path
    root: Path | None = None
    mutual: bool = False


@dataclass(slots=True)
class ServerSettings:
    """Everything `bertserve serve` can be told; flag names follow tritonserver's."""

    #: Model repositories to serve (`--model-repository`, repeatable).
    model_repositories: list[Path] = field(default_factory=list)
    #: Model repositories in object storage (`--model-repository s3://bucket/path`, gs://,
    #: az://), mirrored into `model_cache_dir` before each load and each poll.
    remote_repositories: list[str] = field(default_factory=list)
    #: Where bucket repositories are cached (`--model-cache-dir`); None: $BERTSERVE_CACHE_DIR,
    #: else ~/.cache/bertserve/repositories.
    model_cache_dir: Path | None = None
    #: Interface to bind (`--host`); 127.0.0.1 by default, 0.0.0.0 to expose.
    host: str = "127.0.0.1"
    #: Per-service interfaces (`--http-address`, `--grpc-address`, `--metrics-address`);
    #: empty = `host`. (tritonserver binds 0.0.0.0 by default; bertserve only loopback.)
    http_address: str = ""
    grpc_address: str = ""
    metrics_address: str = ""
    #: SO_REUSEPORT, so several servers share a port (`--reuse-http-port`, `--reuse-grpc-port`).
    reuse_http_port: bool = False
    reuse_grpc_port: bool = False
    #: The server's name in `/v2` and ServerMetadata (`--id`).
    server_id: str = "bertserve"
    #: HTTP/REST port (`--http-port`); 0 picks a free port, which is logged.
    http_port: int = 8000
    #: gRPC port (`--grpc-port`); 0 picks a free port.
    grpc_port: int = 8001
    #: Prometheus metrics port (`--metrics-port`); 0 picks a free port.
    metrics_port: int = 8002
    allow_http: bool = True
    allow_grpc: bool = True
    allow_metrics: bool = True
    #: Serve nv_cpu_* (machine CPU use and memory) with the metrics (`--allow-cpu-metrics`).
    allow_cpu_metrics: bool = True
    #: `--metrics-config counter_latencies=`: Triton's cumulative latency counters
    #: (nv_inference_*_duration_us).
    metrics_counter_latencies: bool = True
    #: `--metrics-config summary_latencies=`: latency summaries (nv_inference_*_summary_us),
    #: quantiles over each model version's last 60 s of requests.
    metrics_summary_latencies: bool = False
    #: `--metrics-config summary_quantiles=`: the quantiles the summaries report.
    metrics_summary_quantiles: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99, 0.999)
    #: GPU gauges in the metrics (`--allow-gpu-metrics`), where a GPU is visible.
    allow_gpu_metrics: bool = True
    #: none: load everything at start, no changes; explicit: load/unload through the API
    #: (only `load_models` at start); poll: rescan the repositories every `repository_poll_secs`.
    model_control_mode: str = "none"
    #: Models to load at start in explicit mode (`--load-model`, repeatable; "*" = all).
    load_models: list[str] = field(default_factory=list)
    repository_poll_secs: float = 15.0
    #: Complete configs from the model files (`--disable-auto-complete-config` turns it off;
    #: so does the older `--strict-model-config=true`).
    auto_complete_config: bool = True
    #: `--backend-config=[<backend>,]<setting>=<value>`: backend -> {setting: value}; "" holds
    #: the settings given without a backend (they apply to every backend).
    backend_config: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Read `<model>/configs/<name>.pbtxt` instead of config.pbtxt where it exists
    #: (`--model-config-name`).
    model_config_name: str = ""
    #: Stop at start-up when a model fails to load (`--exit-on-error`, tritonserver's default).
    exit_on_error: bool = True
    #: Models loaded at once (`--model-load-thread-count`).
    model_load_thread_count: int = 4
    #: Attempts after a failed load before a model is left UNAVAILABLE
    #: (`--model-load-retry-count`).
    model_load_retry_count: int = 0
    #: Let clients register shared memory regions (`--allow-client-shm`; off by default, as
    #: in tritonserver).
    allow_client_shm: bool = False
    #: Readiness (`--strict-readiness`, as tritonserver): true, the server is ready when every
    #: model meant to be loaded is (an explicitly unloaded one is not); false, once it serves.
    strict_readiness: bool = True
    #: Verbosity of the log (`--log-verbose`): 0 quiet, 1 requests and batches.
    log_verbose: int = 0
    #: Largest HTTP request body accepted, in bytes (`--http-max-input-size`).
    http_max_input_size: int = 64 * 1024 * 1024
    #: Largest gRPC message accepted or sent, in bytes (`--grpc-max-message-size`; tritonserver
    #: has no such flag and a fixed limit of 2 GiB - 1, the default).
    grpc_max_message_size: int = GRPC_MAX_MESSAGE
    #: gRPC keepalive and connection settings, tritonserver's flags and defaults.
    grpc_keepalive_time_ms: int = 7_200_000
    grpc_keepalive_timeout_ms: int = 20_000
    grpc_keepalive_permit_without_calls: bool = False
    grpc_http2_max_pings_without_data: int = 2
    grpc_http2_min_recv_ping_interval_without_data_ms: int = 300_000
    grpc_http2_max_ping_strikes: int = 2
    #: 0 = no limit (`--grpc-max-connection-age`, `--grpc-max-connection-age-grace`).
    grpc_max_connection_age_ms: int = 0
    grpc_max_connection_age_grace_ms: int = 0
    #: none, low, medium or high (`--grpc-infer-response-compression-level`).
    grpc_infer_response_compression_level: str = "none"
    #: Log levels and where the log goes (`--log-info/warning/error`, `--log-format`,
    #: `--log-file`; tritonserver's defaults).
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_format: str = "default"
    log_file: str = ""
    #: HTTP worker processes (`--http-workers`): each accepts connections and decodes infer
    #: requests, which run in the engine's process; 0 = HTTP in the engine's process.
    http_workers: int = 0
    #: Most HTTP connections open at once (`--http-max-connections`); past it a new one
    #: closes the longest-idle connection, or is refused with a 503 when none is idle.
    http_max_connections: int = 2048
    #: Seconds a request's line and headers may take to arrive (`--http-header-timeout-secs`).
    http_header_timeout_secs: float = 10.0
    #: Seconds a request's body may take to arrive after its headers
    #: (`--http-body-timeout-secs`).
    http_body_timeout_secs: float = 60.0
    #: Seconds an HTTP connection may wait for its next request (`--http-keep-alive-secs`).
    http_keep_alive_secs: int = 60
    #: Largest request line plus headers, in bytes (`--http-max-header-size`).
    http_max_header_size: int = 64 * 1024
    #: Most gRPC connections open at once (`--grpc-max-connections`); grpc refuses the rest.
    grpc_max_connections: int = 2048
    #: Requests a gRPC stream may have read but not yet answered
    #: (`--grpc-stream-max-outstanding`); past it the server reads no more from that stream
    #: until its client takes replies (HTTP/2 flow control holds the client's sends).
    grpc_stream_max_outstanding: int = 256
    #: Endpoint groups only requests with a given header may call
    #: (`--http-restricted-api`, `--grpc-restricted-protocol`, as tritonserver's).
    http_restricted_apis: list[Restriction] = field(default_factory=list)
    grpc_restricted_protocols: list[Restriction] = field(default_factory=list)
    #: TLS per service (`--http-use-ssl`..., `--grpc-use-ssl`...; None = plain TCP).
    http_tls: TlsFiles | None = None
    grpc_tls: TlsFiles | None = None
    #: Queue bound of every model whose config sets no `max_queue_size`
    #: (`--default-max-queue-size`; 0 = unbounded, as Triton): requests past it are refused
    #: at once (503, Retry-After) instead of waiting without limit.
    default_max_queue_size: int = 1024
    #: Seconds to wait for in-flight requests on SIGTERM/SIGINT (`--exit-timeout-secs`).
    exit_timeout_secs: float = 30.0
    #: How long, in microseconds, one thread may hold Python's GIL while another waits for it
    #: (`--gil-switch-interval-us`; `sys.setswitchinterval`). An instance thread takes the
    #: GIL back after every wait on its device or runtime; with Python's 5,000 us it can
    #: queue that long behind a busy front end. 0 leaves Python's setting.
    gil_switch_interval_us: int = 100
    #: Freed memory, in MiB, that glibc keeps in the process for reuse instead of giving it
    #: back (`--malloc-keep-mb`; see `bertserve.malloc`): batch-sized buffers are then not
    #: faulted in afresh for every batch. 0 leaves glibc's adaptive default.
    malloc_keep_mb: int = 1024
