"""Typed settings, one object per scope. CLI flags map onto these fields one to one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServerSettings", "MODEL_CONTROL_MODES"]

MODEL_CONTROL_MODES = ("none", "explicit", "poll")


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
    #: none: load everything at start, no changes; explicit: load/unload through the API
    #: (only `load_models` at start); poll: rescan the repositories every `repository_poll_secs`.
    model_control_mode: str = "none"
    #: Models to load at start in explicit mode (`--load-model`, repeatable; "*" = all).
    load_models: list[str] = field(default_factory=list)
    repository_poll_secs: float = 15.0
    #: Refuse configs that omit inputs/outputs instead of completing them from the model file.
    strict_model_config: bool = False
    #: Verbosity of the log (`--log-verbose`): 0 quiet, 1 requests and batches.
    log_verbose: int = 0
    #: Largest HTTP request body accepted, in bytes (`--http-max-input-size`).
    http_max_input_size: int = 64 * 1024 * 1024
    #: Largest gRPC message accepted or sent, in bytes (`--grpc-max-message-size`).
    grpc_max_message_size: int = 64 * 1024 * 1024
    #: Seconds to wait for in-flight requests on SIGTERM/SIGINT (`--exit-timeout-secs`).
    exit_timeout_secs: float = 30.0
    #: How long, in microseconds, one thread may hold Python's GIL while another waits for it
    #: (`--gil-switch-interval-us`; `sys.setswitchinterval`). An instance thread takes the
    #: GIL back after every wait on its device or runtime; with Python's 5,000 us it can
    #: queue that long behind a busy front end. 0 leaves Python's setting.
    gil_switch_interval_us: int = 100
