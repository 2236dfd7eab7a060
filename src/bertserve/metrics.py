"""Prometheus metrics with Triton's names, read from the engine's statistics at scrape time
(nothing is counted twice, and the hot path pays nothing for metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bertserve.stats import ModelStats

__all__ = ["TritonMetrics", "METRIC_NAMES"]

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
