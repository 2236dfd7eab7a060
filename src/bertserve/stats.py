"""Per model-version statistics in Triton's shape (the statistics extension), kept in one place
so the statistics endpoint and the Prometheus metrics read the same numbers."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "WINDOW_FIELDS",
    "BatchStats",
    "Duration",
    "LatencyWindow",
    "ModelStats",
    "RequestTiming",
]

#: The per-request durations a LatencyWindow keeps, in this order.
WINDOW_FIELDS = ("request", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class BatchStats:
    batch_size: int
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "compute_input": self.compute_input.to_json(),
            "compute_infer": self.compute_infer.to_json(),
            "compute_output": self.compute_output.to_json(),
        }


@dataclass(slots=True)
class RequestTiming:
    """Nanosecond timestamps of one request's path through the server (time.perf_counter_ns)."""

    arrival: int
    dispatch: int = 0  # left the queue
    input_done: int = 0  # inputs stacked for the backend
    infer_done: int = 0  # backend returned
    output_done: int = 0  # outputs split back


class LatencyWindow:
    """The last `max_age_s` seconds of each request's durations in microseconds (request,
    queue, compute input/infer/output), for Triton's latency summaries. At most
    `max_samples` are kept: under a heavier load the window is shorter than `max_age_s`."""

    def __init__(self, max_age_s: float = 60.0, max_samples: int = 100_000) -> None:
        self.max_age_s = max_age_s
        self._samples: deque[tuple[float, ...]] = deque(maxlen=max_samples)

    def add(self, now_s: float, durations_us: tuple[float, ...]) -> None:
        self._samples.append((now_s, *durations_us))

    def recent(self, now_s: float) -> list[tuple[float, ...]]:
        """Durations of the requests that finished within `max_age_s` of `now_s`."""
        while self._samples and self._samples[0][0] < now_s - self.max_age_s:
            self._samples.popleft()
        return [sample[1:] for sample in self._samples]


@dataclass
class ModelStats:
    """Counters of one model version. Updated from the event loop and from instance threads."""

    name: str
    version: str
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0  # batch items that succeeded
    execution_count: int = 0  # backend executions
    last_inference_ms: int = 0
    fail_reasons: dict[str, int] = field(default_factory=dict)
    batches: dict[int, BatchStats] = field(default_factory=dict)
    #: Recent per-request durations, kept only when latency summaries are on.
    window: LatencyWindow | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(self, timing: RequestTiming, batch_items: int, end_ns: int) -> None:
        request = end_ns - timing.arrival
        queue = timing.dispatch - timing.arrival
        compute_input = timing.input_done - timing.dispatch
        compute_infer = timing.infer_done - timing.input_done
        compute_output = timing.output_done - timing.infer_done
        with self._lock:
            self.success.add(request)
            self.queue.add(queue)
            self.compute_input.add(compute_input)
            self.compute_infer.add(compute_infer)
            self.compute_output.add(compute_output)
            self.inference_count += batch_items
            self.last_inference_ms = int(time.time() * 1000)
            if self.window is not None:
                durations = (request, queue, compute_input, compute_infer, compute_output)
                self.window.add(time.monotonic(), tuple(ns / 1000 for ns in durations))

    def recent_latencies(self) -> list[tuple[float, ...]]:
        """The window's per-request durations (WINDOW_FIELDS order, microseconds)."""
        with self._lock:
            return [] if self.window is None else self.window.recent(time.monotonic())

    def record_failure(self, timing: RequestTiming | None, reason: str, end_ns: int) -> None:
        with self._lock:
            self.fail.add(end_ns - timing.arrival if timing else 0)
            self.fail_reasons[reason] = self.fail_reasons.get(reason, 0) + 1

    def record_execution(
        self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        with self._lock:
            self.execution_count += 1
            stats = self.batches.get(batch_size)
            if stats is None:
                stats = self.batches[batch_size] = BatchStats(batch_size)
            stats.compute_input.add(input_ns)
            stats.compute_infer.add(infer_ns)
            stats.compute_output.add(output_ns)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.to_json(),
                    "fail": self.fail.to_json(),
                    "queue": self.queue.to_json(),
                    "compute_input": self.compute_input.to_json(),
                    "compute_infer": self.compute_infer.to_json(),
                    "compute_output": self.compute_output.to_json(),
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [self.batches[k].to_json() for k in sorted(self.batches)],
                "memory_usage": [],
            }
