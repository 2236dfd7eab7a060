"""When a load level is measured: perf_analyzer's rule, as pure functions over window series.

A point is stable when the last `STABILITY_WINDOWS` windows each lie within ±s% of their mean,
on throughput and on the judged latency (a percentile or the average), and none of them saw
zero throughput.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["STABILITY_WINDOWS", "is_stable", "within_threshold"]

#: Consecutive windows that must agree (perf_analyzer's stability window).
STABILITY_WINDOWS = 3


def within_threshold(values: Sequence[float], threshold: float) -> bool:
    """Every value lies within ±`threshold` (a fraction) of the values' mean."""
    if not values:
        return False
    mean = sum(values) / len(values)
    low, high = mean * (1 - threshold), mean * (1 + threshold)
    return all(low <= v <= high for v in values)


def is_stable(
    throughputs: Sequence[float],
    latencies: Sequence[float],
    stability_percent: float,
    *,
    windows: int = STABILITY_WINDOWS,
) -> bool:
    """Whether the last `windows` entries of both series agree within ±`stability_percent`%."""
    if len(throughputs) != len(latencies):
        raise ValueError("throughputs and latencies must have one entry per window")
    if len(throughputs) < windows:
        return False
    recent_tp = throughputs[-windows:]
    if any(t <= 0 for t in recent_tp):
        return False
    threshold = stability_percent / 100.0
    return within_threshold(recent_tp, threshold) and within_threshold(
        latencies[-windows:], threshold
    )
