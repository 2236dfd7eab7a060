"""Measurement windows: what the load generator records per request, and what one window (or
the stable windows merged) says about latency, throughput and where the time went.

A request belongs to the window in which its response arrived, as in perf_analyzer; its latency
runs from its start (the scheduled send time in request-rate mode) to the end of its response.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bertserve.perf.results import Measurement

__all__ = [
    "PERCENTILES",
    "Recorder",
    "ServerCounters",
    "WindowSummary",
    "merge_windows",
    "percentile",
    "server_counters",
    "summarize",
]

#: Percentiles every point reports (perf_analyzer's CSV columns).
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)

# start_ns, end_ns, client send ns, client receive ns, succeeded
Record = tuple[int, int, int, int, bool]


class Recorder:
    """Collects completed requests; `cut()` hands over those completed since the last cut.

    Appending is the only work on the hot path. In count_windows mode `target` makes `full`
    fire once that many requests have completed since the last cut."""

    __slots__ = ("_records", "delayed", "dropped", "target", "full")

    def __init__(self) -> None:
        self._records: list[Record] = []
        self.delayed = 0
        self.dropped = 0
        self.target = 0
        self.full = asyncio.Event()

    def add(self, start_ns: int, end_ns: int, send_ns: int, recv_ns: int, ok: bool) -> None:
        records = self._records
        records.append((start_ns, end_ns, send_ns, recv_ns, ok))
        if self.target and len(records) >= self.target:
            self.full.set()

    def cut(self) -> tuple[list[Record], int, int]:
        """Records, delayed sends and dropped sends since the last cut."""
        records, delayed, dropped = self._records, self.delayed, self.dropped
        self._records, self.delayed, self.dropped = [], 0, 0
        self.full.clear()
        return records, delayed, dropped


@dataclass(frozen=True, slots=True)
class ServerCounters:
    """Cumulative counters of one model version from the statistics endpoint."""

    success_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0

    def __sub__(self, earlier: ServerCounters) -> ServerCounters:
        return ServerCounters(
            self.success_count - earlier.success_count,
            self.queue_ns - earlier.queue_ns,
            self.compute_input_ns - earlier.compute_input_ns,
            self.compute_infer_ns - earlier.compute_infer_ns,
            self.compute_output_ns - earlier.compute_output_ns,
        )

    def __add__(self, other: ServerCounters) -> ServerCounters:
        return ServerCounters(
            self.success_count + other.success_count,
            self.queue_ns + other.queue_ns,
            self.compute_input_ns + other.compute_input_ns,
            self.compute_infer_ns + other.compute_infer_ns,
            self.compute_output_ns + other.compute_output_ns,
        )

    def per_request_us(self) -> tuple[float, float, float, float]:
        """Average queue, compute input, infer and output per request, in microseconds."""
        n = self.success_count
        if n <= 0:
            return 0.0, 0.0, 0.0, 0.0
        return (
            self.queue_ns / n / 1e3,
            self.compute_input_ns / n / 1e3,
            self.compute_infer_ns / n / 1e3,
            self.compute_output_ns / n / 1e3,
        )


def server_counters(stats: Mapping[str, Any], model: str, version: str) -> ServerCounters:
    """The counters of `model` (at `version`, or summed over versions when empty) from a
    v2 statistics document ({"model_stats": [...]}, as HTTP returns it)."""
    total = ServerCounters()
    for entry in stats.get("model_stats", []):
        if entry.get("name") != model or (version and str(entry.get("version")) != version):
            continue
        s = entry.get("inference_stats", {})

        def ns(key: str, s: Mapping[str, Any] = s) -> int:
            return int(s.get(key, {}).get("ns", 0))

        total = total + ServerCounters(
            int(s.get("success", {}).get("count", 0)),
            ns("queue"),
            ns("compute_input"),
            ns("compute_infer"),
            ns("compute_output"),
        )
    return total


@dataclass(frozen=True)
class WindowSummary:
    """One window, or several merged: everything a Measurement needs, plus what judges it."""

    duration_s: float
    latencies_us: np.ndarray = field(repr=False)
    """Sorted latencies of the successful requests."""
    errors: int
    send_us_total: float
    recv_us_total: float
    server: ServerCounters | None
    delayed_sends: int
    dropped_sends: int
    client_cpu_s: float
    windows: int = 1

    @property
    def request_count(self) -> int:
        return int(self.latencies_us.size)

    def throughput(self, batch_size: int) -> float:
        """Inferences per second."""
        return self.request_count * batch_size / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def avg_us(self) -> float:
        return float(self.latencies_us.mean()) if self.request_count else 0.0

    def latency_us(self, stat: str) -> float:
        """ "avg" or "p<N>" (any integer percentile, as `--percentile` allows)."""
        if stat == "avg":
            return self.avg_us
        return percentile(self.latencies_us, int(stat.removeprefix("p")))

    @property
    def client_cpu_fraction(self) -> float:
        """Share of one core the load generator's process used during the window(s)."""
        return self.client_cpu_s / self.duration_s if self.duration_s > 0 else 0.0

    def to_measurement(
        self,
        *,
        batch_size: int,
        concurrency: int | None = None,
        request_rate: float | None = None,
        stable: bool = True,
    ) -> Measurement:
        n = self.request_count
        avg = self.avg_us
        send = self.send_us_total / n if n else 0.0
        recv = self.recv_us_total / n if n else 0.0
        queue, c_in, c_infer, c_out = self.server.per_request_us() if self.server else (0, 0, 0, 0)
        # What the client waited for beyond the server's own stages and its own send/receive
        # work: perf_analyzer's derived column, clamped at zero as it does.
        network = max(0.0, avg - send - recv - queue - c_in - c_infer - c_out)
        extras = {
            "stable": 1.0 if stable else 0.0,
            "windows": float(self.windows),
            "duration_s": self.duration_s,
            "client_cpu_fraction": self.client_cpu_fraction,
        }
        open_loop = request_rate is not None
        return Measurement(
            concurrency=concurrency,
            request_rate=request_rate,
            batch_size=batch_size,
            throughput=self.throughput(batch_size),
            latency_avg_us=avg,
            latency_p50_us=percentile(self.latencies_us, 50),
            latency_p90_us=percentile(self.latencies_us, 90),
            latency_p95_us=percentile(self.latencies_us, 95),
            latency_p99_us=percentile(self.latencies_us, 99),
            client_send_us=send,
            network_server_send_recv_us=network,
            server_queue_us=queue,
            server_compute_input_us=c_in,
            server_compute_infer_us=c_infer,
            server_compute_output_us=c_out,
            client_recv_us=recv,
            request_count=n,
            errors=self.errors,
            delayed_sends=self.delayed_sends if open_loop else None,
            dropped_sends=self.dropped_sends if open_loop else None,
            extras=extras,
        )


def percentile(sorted_values: np.ndarray, pct: int) -> float:
    """perf_analyzer's percentile: the element at round(pct/100 * (n - 1)) of the sorted list."""
    n = sorted_values.size
    if n == 0:
        return 0.0
    index = int(pct / 100.0 * (n - 1) + 0.5)
    return float(sorted_values[min(index, n - 1)])


def summarize(
    records: Sequence[tuple[int, int, int, int, bool]],
    *,
    duration_s: float,
    server: ServerCounters | None,
    delayed: int,
    dropped: int,
    client_cpu_s: float,
) -> WindowSummary:
    ok = [r for r in records if r[4]]
    if ok:
        table = np.array([r[:4] for r in ok], dtype=np.int64)
        latencies = np.sort((table[:, 1] - table[:, 0]) / 1e3)
        send_total = float(table[:, 2].sum()) / 1e3
        recv_total = float(table[:, 3].sum()) / 1e3
    else:
        latencies = np.empty(0)
        send_total = recv_total = 0.0
    return WindowSummary(
        duration_s=duration_s,
        latencies_us=latencies,
        errors=len(records) - len(ok),
        send_us_total=send_total,
        recv_us_total=recv_total,
        server=server,
        delayed_sends=delayed,
        dropped_sends=dropped,
        client_cpu_s=client_cpu_s,
    )


def merge_windows(windows: Iterable[WindowSummary]) -> WindowSummary:
    """The windows as one longer window (perf_analyzer reports the stable windows merged)."""
    items = list(windows)
    if not items:
        raise ValueError("no windows to merge")
    servers = [w.server for w in items]
    server = None
    if all(s is not None for s in servers):
        server = ServerCounters()
        for s in servers:
            assert s is not None
            server = server + s
    return WindowSummary(
        duration_s=math.fsum(w.duration_s for w in items),
        latencies_us=np.sort(np.concatenate([w.latencies_us for w in items])),
        errors=sum(w.errors for w in items),
        send_us_total=math.fsum(w.send_us_total for w in items),
        recv_us_total=math.fsum(w.recv_us_total for w in items),
        server=server,
        delayed_sends=sum(w.delayed_sends for w in items),
        dropped_sends=sum(w.dropped_sends for w in items),
        client_cpu_s=math.fsum(w.client_cpu_s for w in items),
        windows=sum(w.windows for w in items),
    )
