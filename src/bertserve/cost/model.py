"""The cost model: dollars per million inferences, the best point under a latency budget, and
cost ratios between deployments worded so they cannot be read backwards."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bertserve.perf.results import Measurement

__all__ = [
    "CostComparison",
    "best_point",
    "budget_interval",
    "compare_costs",
    "cost_per_million",
    "format_ratio",
]

SECONDS_PER_HOUR = 3600.0


def cost_per_million(price_per_hour: float, throughput: float) -> float:
    """Dollars per million inferences: price / (throughput x 3600) x 10^6.

    `throughput` is inferences per second (batch items, as perf_analyzer counts them). A
    machine kept busy at that rate for an hour serves throughput x 3600 inferences.
    Zero throughput costs infinitely much per inference.
    """
    if price_per_hour < 0:
        raise ValueError(f"price per hour must be >= 0, not {price_per_hour}")
    if throughput <= 0:
        return math.inf
    return price_per_hour / (throughput * SECONDS_PER_HOUR) * 1e6


def best_point(
    measurements: Iterable[Measurement], *, stat: str = "p99", budget_ms: float | None = None
) -> Measurement | None:
    """The highest-throughput point whose `stat` latency is within the budget (all points if
    the budget is None), ties going to the lower latency. Points with errors are never best.
    None when no point qualifies."""
    eligible = [
        m
        for m in measurements
        if m.errors == 0 and (budget_ms is None or m.latency_us(stat) <= budget_ms * 1000.0)
    ]
    if not eligible:
        return None
    return max(eligible, key=lambda m: (m.throughput, -m.latency_us(stat)))


def budget_interval(
    measurements: Sequence[Measurement], target: Measurement, *, stat: str = "p99"
) -> tuple[float, float] | None:
    """The latency budgets, in ms, [low, high), under which `best_point` picks `target`;
    None when no budget does (a faster point is also at least as quick)."""
    low = target.latency_us(stat)
    beaters = [
        m.latency_us(stat)
        for m in measurements
        if m is not target
        and m.errors == 0
        and (
            m.throughput > target.throughput
            or (m.throughput == target.throughput and m.latency_us(stat) < low)
        )
    ]
    high = min(beaters, default=math.inf)
    if high <= low:
        return None
    return low / 1000.0, high / 1000.0


def format_ratio(ratio: float) -> str:
    if math.isinf(ratio):
        return "infinitely"
    return f"{ratio:.1f}" if ratio >= 10 else f"{ratio:.2f}"


@dataclass(frozen=True)
class CostComparison:
    """`cheaper` costs `1/ratio` as much per inference as `dearer` (ratio >= 1)."""

    cheaper: str
    cheaper_cost: float
    dearer: str
    dearer_cost: float

    @property
    def ratio(self) -> float:
        if self.cheaper_cost == 0:
            return math.inf
        return self.dearer_cost / self.cheaper_cost

    def sentence(self) -> str:
        if math.isinf(self.ratio):
            return f"{self.cheaper} costs nothing per query next to {self.dearer}"
        return (
            f"{self.cheaper} costs 1/{format_ratio(self.ratio)} as much per query as "
            f"{self.dearer} (${self.cheaper_cost:.4g} vs ${self.dearer_cost:.4g} per million "
            "inferences)"
        )


def compare_costs(a: str, cost_a: float, b: str, cost_b: float) -> CostComparison:
    """Order two deployments by cost per inference, cheaper first."""
    if cost_a <= cost_b:
        return CostComparison(cheaper=a, cheaper_cost=cost_a, dearer=b, dearer_cost=cost_b)
    return CostComparison(cheaper=b, cheaper_cost=cost_b, dearer=a, dearer_cost=cost_a)
