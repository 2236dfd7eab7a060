"""The cost formula, best point under a budget, and the ratio wording, against hand sums."""

from __future__ import annotations

import math

import pytest

from bertserve import cost
from bertserve.cost import best_point, budget_interval, compare_costs, cost_per_million
from bertserve.perf.results import Measurement


def _m(concurrency: int, throughput: float, p99_ms: float, errors: int = 0) -> Measurement:
    us = p99_ms * 1000
    return Measurement(
        concurrency=concurrency,
        throughput=throughput,
        latency_p50_us=us / 2,
        latency_p90_us=us * 0.8,
        latency_p95_us=us * 0.9,
        latency_p99_us=us,
        errors=errors,
    )


def test_public_names_are_exported() -> None:
    for name in cost.__all__:
        assert hasattr(cost, name)


def test_cost_per_million_matches_hand_computations() -> None:
    # The reference README's own arithmetic.
    assert cost_per_million(4.56, 24) == pytest.approx(52.7778, abs=1e-4)
    assert cost_per_million(0.54, 465) == pytest.approx(0.32258, abs=1e-5)
    # $3.60 an hour at 1 inference/s: 3600 inferences for $3.60, so $1000 per million.
    assert cost_per_million(3.60, 1.0) == pytest.approx(1000.0, rel=1e-12)
    assert cost_per_million(1.0, 0.0) == math.inf


def test_negative_price_is_refused() -> None:
    with pytest.raises(ValueError, match="price per hour"):
        cost_per_million(-1.0, 10.0)


def test_best_point_under_budget() -> None:
    points = [_m(4, 448.7, 32.0), _m(8, 465.3, 52.7), _m(10, 476.7, 63.2), _m(22, 530, 118.4)]
    assert best_point(points).concurrency == 22  # type: ignore[union-attr]
    assert best_point(points, budget_ms=60).concurrency == 8  # type: ignore[union-attr]
    assert best_point(points, budget_ms=52.7).concurrency == 8  # type: ignore[union-attr]
    assert best_point(points, budget_ms=10) is None
    # The budget applies to the chosen statistic: p50 is half of p99 here.
    assert best_point(points, stat="p50", budget_ms=60).concurrency == 22  # type: ignore[union-attr]


def test_best_point_ties_and_errors() -> None:
    points = [_m(4, 34.67, 230.7), _m(8, 34.67, 470.0), _m(6, 40.0, 300.0, errors=2)]
    best = best_point(points)
    assert best is not None and best.concurrency == 4


def test_budget_interval() -> None:
    points = [_m(4, 448.7, 32.0), _m(8, 465.3, 52.7), _m(10, 476.7, 63.2)]
    assert budget_interval(points, points[1]) == pytest.approx((52.7, 63.2))
    assert budget_interval(points, points[2]) == (63.2, math.inf)
    slow_and_small = _m(12, 400.0, 70.0)
    assert budget_interval([*points, slow_and_small], slow_and_small) is None


def test_ratio_is_stated_unambiguously() -> None:
    c = compare_costs("DistilBERT CPU", 52.7778, "TRT T4", 0.322581)
    assert c.cheaper == "TRT T4" and c.dearer == "DistilBERT CPU"
    assert c.ratio == pytest.approx(163.61, abs=0.01)
    assert c.sentence().startswith("TRT T4 costs 1/163.6 as much per query as DistilBERT CPU")
    assert "$0.3226 vs $52.78 per million inferences" in c.sentence()
    assert "1/2.00 as much" in compare_costs("a", 1.0, "b", 2.0).sentence()
