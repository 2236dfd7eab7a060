"""Prometheus metrics with Triton's names, read from the engine's statistics at scrape time
(nothing is counted twice, and the hot path pays nothing for metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bertserve.stats import ModelStats

__all__ = ["TritonMetrics", "GpuMetrics", "METRIC_NAMES", "visible_gpu_filter"]

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
METRIC_NAMES = ("nv_inference_request_failure", *_COUNTERS)


class TritonMetrics(Collector):
    def __init__(
        self,
        stats: Callable[[], Iterable[ModelStats]],
        queue_lengths: Callable[[], Iterable[tuple[str, str, int]]] | None = None,
    ) -> None:
        self._stats = stats
        self._queues = queue_lengths

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
            metric = Metric(name, doc, "counter")
            for s in all_stats:
                metric.add_sample(name, {"model": s.name, "version": s.version}, read(s))
            yield metric
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


def visible_gpu_filter(environ: dict[str, str]) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of indices or UUID prefixes; None = every GPU."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


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

    def _handles(self) -> list[tuple[str, object]]:
        nvml = self._nvml
        assert nvml is not None
        handles = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            if self._visible is not None and not any(
                v == str(index) or uuid.startswith(v) for v in self._visible
            ):
                continue
            handles.append((uuid, handle))
        return handles

    def collect(self) -> Iterator[Metric]:
        nvml = self._nvml
        if nvml is None:
            return
        util = Metric("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge")
        used = Metric("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge")
        total = Metric("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge")
        power = Metric("nv_gpu_power_usage", "GPU power usage in watts", "gauge")
        for uuid, handle in self._handles():
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
