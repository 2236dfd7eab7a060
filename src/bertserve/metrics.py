"""Prometheus metrics with Triton's names, read from the engine's statistics at scrape time
(nothing is counted twice, and the hot path pays nothing for metrics).

Exposition follows Triton's: a counter's `# HELP` and `# TYPE` lines carry the same name as
its samples (`nv_inference_count`, no `_total`), so `promtool check metrics` finds help text
for every metric. prometheus_client's writer would name the help line `..._total` while the
samples keep Triton's name, which is why `exposition` writes the text format itself.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from bertserve.gpus import visible_gpu_filter, visible_gpu_handles
from bertserve.settings import ServerSettings
from bertserve.stats import WINDOW_FIELDS, ModelStats

__all__ = [
    "CONTENT_TYPE",
    "CpuMetrics",
    "GpuMetrics",
    "METRIC_NAMES",
    "MetricsServer",
    "TritonMetrics",
    "build_registry",
    "exposition",
    "parse_quantiles",
    "visible_gpu_filter",
    "visible_gpu_handles",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: prometheus_client's number format for the text exposition (untyped there).
_go_float: Callable[[float], str] = floatToGoString

# name -> (help, how to read it from ModelStats)
_COUNTERS: dict[str, tuple[str, Callable[[ModelStats], float]]] = {
    "nv_inference_request_success": (
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    "nv_inference_count": (
        "Number of inferences performed (a batch of n counts n)",
        lambda s: s.inference_count,
    ),
    "nv_inference_exec_count": (
        "Number of model executions performed (a batch counts once)",
        lambda s: s.execution_count,
    ),
    "nv_inference_request_duration_us": (
        "Cumulative inference request duration in microseconds (queue and compute included)",
        lambda s: s.success.ns // 1000,
    ),
    "nv_inference_queue_duration_us": (
        "Cumulative inference queuing duration in microseconds",
        lambda s: s.queue.ns // 1000,
    ),
    "nv_inference_compute_input_duration_us": (
        "Cumulative compute input duration in microseconds",
        lambda s: s.compute_input.ns // 1000,
    ),
    "nv_inference_compute_infer_duration_us": (
        "Cumulative compute inference duration in microseconds",
        lambda s: s.compute_infer.ns // 1000,
    ),
    "nv_inference_compute_output_duration_us": (
        "Cumulative inference compute output duration in microseconds",
        lambda s: s.compute_output.ns // 1000,
    ),
}
_LATENCY_COUNTERS = (
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)
METRIC_NAMES = ("nv_inference_request_failure", *_COUNTERS)

# Triton's latency summaries, in stats.WINDOW_FIELDS order: name, help, cumulative sum (us).
_SUMMARIES: tuple[tuple[str, str, Callable[[ModelStats], float]], ...] = (
    (
        "nv_inference_request_summary_us",
        "Summary of inference request duration in microseconds (queue and compute included)",
        lambda s: s.success.ns / 1000,
    ),
    (
        "nv_inference_queue_summary_us",
        "Summary of inference queuing duration in microseconds",
        lambda s: s.queue.ns / 1000,
    ),
    (
        "nv_inference_compute_input_summary_us",
        "Summary of compute input duration in microseconds",
        lambda s: s.compute_input.ns / 1000,
    ),
    (
        "nv_inference_compute_infer_summary_us",
        "Summary of compute inference duration in microseconds",
        lambda s: s.compute_infer.ns / 1000,
    ),
    (
        "nv_inference_compute_output_summary_us",
        "Summary of inference compute output duration in microseconds",
        lambda s: s.compute_output.ns / 1000,
    ),
)
assert len(_SUMMARIES) == len(WINDOW_FIELDS)


def parse_quantiles(text: str) -> tuple[float, ...]:
    """Triton's `summary_quantiles` value, "0.5:0.05,0.9:0.01" (quantile:error); the error
    bounds are accepted and unused, since the quantiles here are exact over the window."""
    quantiles = []
    for item in text.split(","):
        value = item.split(":")[0].strip()
        try:
            q = float(value)
        except ValueError:
            raise ValueError(f"summary_quantiles: {item!r} is not quantile[:error]") from None
        if not 0 < q < 1:
            raise ValueError(f"summary_quantiles: {q} is not between 0 and 1")
        quantiles.append(q)
    if not quantiles:
        raise ValueError("summary_quantiles: give at least one quantile, e.g. 0.5:0.05")
    return tuple(sorted(set(quantiles)))


class TritonMetrics(Collector):
    """Per model version: request counts, latency counters (unless turned off), latency
    summaries (when quantiles are given) and the pending-request gauge."""

    def __init__(
        self,
        stats: Callable[[], Iterable[ModelStats]],
        queue_lengths: Callable[[], Iterable[tuple[str, str, int]]] | None = None,
        *,
        counter_latencies: bool = True,
        summary_quantiles: Sequence[float] = (),
    ) -> None:
        self._stats = stats
        self._queues = queue_lengths
        self._counter_latencies = counter_latencies
        self._quantiles = tuple(summary_quantiles)

    def collect(self) -> Iterator[Metric]:
        all_stats = list(self._stats())
        failure = Metric(
            "nv_inference_request_failure",
            "Number of failed inference requests, all batch sizes",
            "counter",
        )
        for s in all_stats:
            for reason in sorted({"REJECTED", "BACKEND", *s.fail_reasons}):
                failure.add_sample(
                    "nv_inference_request_failure",
                    {"model": s.name, "version": s.version, "reason": reason},
                    s.fail_reasons.get(reason, 0),
                )
        yield failure
        for name, (doc, read) in _COUNTERS.items():
            if name in _LATENCY_COUNTERS and not self._counter_latencies:
                continue
            metric = Metric(name, doc, "counter")
            for s in all_stats:
                metric.add_sample(name, {"model": s.name, "version": s.version}, read(s))
            yield metric
        if self._quantiles:
            yield from self._summaries(all_stats)
        if self._queues is not None:
            pending = Metric(
                "nv_inference_pending_request_count",
                "Instantaneous number of pending requests awaiting execution per-model.",
                "gauge",
            )
            for model, version, length in self._queues():
                pending.add_sample(
                    "nv_inference_pending_request_count",
                    {"model": model, "version": version},
                    length,
                )
            yield pending

    def _summaries(self, all_stats: list[ModelStats]) -> Iterator[Metric]:
        summaries = [Metric(name, doc, "summary") for name, doc, _ in _SUMMARIES]
        for s in all_stats:
            labels = {"model": s.name, "version": s.version}
            recent = np.asarray(s.recent_latencies(), dtype=np.float64).reshape(-1, len(_SUMMARIES))
            for column, (metric, (name, _, total)) in enumerate(
                zip(summaries, _SUMMARIES, strict=True)
            ):
                metric.add_sample(f"{name}_count", labels, s.success.count)
                metric.add_sample(f"{name}_sum", labels, total(s))
                for q in self._quantiles:
                    value = (
                        float(np.quantile(recent[:, column], q, method="inverted_cdf"))
                        if len(recent)
                        else float("nan")
                    )
                    metric.add_sample(name, {**labels, "quantile": _go_float(q)}, value)
        yield from summaries


class CpuMetrics(Collector):
    """Triton's CPU metrics from /proc: utilization of all cores since the previous scrape
    (since the collector was made, at the first), and the machine's memory in bytes (used =
    total - available, as `free` counts it)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._lock = threading.Lock()
        self._last = self._cpu_times()

    @property
    def available(self) -> bool:
        return self._last is not None

    def _cpu_times(self) -> tuple[int, int] | None:
        """(busy, total) jiffies of all CPUs: /proc/stat's first line; idle counts iowait."""
        try:
            first = (self._proc / "stat").read_text().splitlines()[0].split()
        except (OSError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        ticks = [int(v) for v in first[1:9]]
        idle = ticks[3] + ticks[4]
        return sum(ticks) - idle, sum(ticks)

    def _memory(self) -> tuple[float, float] | None:
        try:
            text = (self._proc / "meminfo").read_text()
        except OSError:
            return None
        fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE))
        if "MemTotal" not in fields or "MemAvailable" not in fields:
            return None
        total = int(fields["MemTotal"]) * 1024
        return float(total), float(total - int(fields["MemAvailable"]) * 1024)

    def collect(self) -> Iterator[Metric]:
        now = self._cpu_times()
        with self._lock:
            last, self._last = self._last, now or self._last
        if now is not None and last is not None:
            busy, total = now[0] - last[0], now[1] - last[1]
            utilization = Metric("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", "gauge")
            utilization.add_sample("nv_cpu_utilization", {}, busy / total if total > 0 else 0.0)
            yield utilization
        memory = self._memory()
        if memory is not None:
            for name, doc, value in (
                ("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", memory[0]),
                ("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", memory[1]),
            ):
                metric = Metric(name, doc, "gauge")
                metric.add_sample(name, {}, value)
                yield metric


def build_registry(
    stats: Callable[[], Iterable[ModelStats]],
    queue_lengths: Callable[[], Iterable[tuple[str, str, int]]],
    settings: ServerSettings,
) -> CollectorRegistry:
    """Every collector `serve` exposes, as its settings ask (`--metrics-config`,
    `--allow-cpu-metrics`); GPU metrics where NVML finds a driver (unless
    `--allow-gpu-metrics=false`)."""
    registry = CollectorRegistry()
    quantiles = settings.metrics_summary_quantiles if settings.metrics_summary_latencies else ()
    registry.register(
        TritonMetrics(
            stats,
            queue_lengths,
            counter_latencies=settings.metrics_counter_latencies,
            summary_quantiles=quantiles,
        )
    )
    gpu = GpuMetrics(dict(os.environ))
    if gpu.available and settings.allow_gpu_metrics:
        registry.register(gpu)
    if settings.allow_cpu_metrics:
        cpu = CpuMetrics()
        if cpu.available:
            registry.register(cpu)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format, Triton's way: HELP and TYPE name each metric
    exactly as its samples do."""
    lines = []
    for metric in registry.collect():
        kind = "untyped" if metric.type == "unknown" else metric.type
        lines.append(f"# HELP {metric.name} {_escape(metric.documentation)}")
        lines.append(f"# TYPE {metric.name} {kind}")
        for sample in metric.samples:
            labels = ",".join(
                f'{key}="{_escape(value, quote=True)}"' for key, value in sample.labels.items()
            )
            where = f"{{{labels}}}" if labels else ""
            lines.append(f"{sample.name}{where} {_go_float(sample.value)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _escape(text: str, *, quote: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


class MetricsServer:
    """`GET /metrics` on its own thread, as tritonserver serves it on --metrics-port."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "not found: metrics are served at /metrics")
                    return
                body = exposition(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # a scrape every few seconds is not news

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="bertserve-metrics", daemon=True
        )
        self._thread.start()

    @property
    def server_port(self) -> int:
        return int(self._httpd.server_address[1])

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._thread.join()

    def server_close(self) -> None:
        self._httpd.server_close()


class GpuMetrics(Collector):
    """Triton's per-GPU metrics (`nv_gpu_*`, labelled by gpu_uuid) read through NVML at scrape
    time. Yields nothing where NVML is absent (no NVIDIA driver): a CPU machine has no GPU."""

    def __init__(self, environ: dict[str, str]) -> None:
        self._visible = visible_gpu_filter(environ)
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no driver or no library: no GPU metrics
            self._nvml = None

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def collect(self) -> Iterator[Metric]:
        nvml = self._nvml
        if nvml is None:
            return
        util = Metric("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge")
        used = Metric("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge")
        total = Metric("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge")
        power = Metric("nv_gpu_power_usage", "GPU power usage in watts", "gauge")
        for uuid, handle in visible_gpu_handles(nvml, self._visible):
            labels = {"gpu_uuid": uuid}
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            util.add_sample("nv_gpu_utilization", labels, rates.gpu / 100.0)
            used.add_sample("nv_gpu_memory_used_bytes", labels, float(memory.used))
            total.add_sample("nv_gpu_memory_total_bytes", labels, float(memory.total))
            try:
                watts = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
                power.add_sample("nv_gpu_power_usage", labels, watts)
            except nvml.NVMLError:  # some boards don't report power
                continue
        yield from (util, used, total, power)
