"""One candidate's capacity search, the fleet model and the Pareto front."""

from __future__ import annotations

import pytest

from bertserve.cost.catalog import Machine
from bertserve.perf.results import Measurement
from bertserve.plan.capacity import (
    HOURS_PER_MONTH,
    Prediction,
    operating_point,
    plan_fleet,
    predict,
)
from bertserve.plan.capacity_search import Outcome, Point, Screen, find_capacity, pick
from bertserve.plan.knobs import Candidate, Knobs, Variant
from bertserve.plan.pareto import pareto_front
from tests.plan.landscape import Landscape

MACHINE = Machine(id="m1", name="one", price_per_hour=2.0, source="test", as_of="now")


def point(c: int, throughput: float, p99_ms: float, queue_us: float = 0.0) -> Measurement:
    return Measurement(
        concurrency=c,
        throughput=throughput,
        latency_p50_us=p99_ms * 800,
        latency_p90_us=p99_ms * 900,
        latency_p95_us=p99_ms * 950,
        latency_p99_us=p99_ms * 1000,
        server_queue_us=queue_us,
    )


CURVE = [
    point(1, 100, 10, 0),
    point(2, 180, 12, 1000),
    point(4, 300, 16, 4000),
    point(8, 320, 30, 12000),
]


def test_operating_point_is_a_measured_level() -> None:
    op = operating_point(CURVE, 300, 0.8, "p99")  # 240/s: at most that, concurrency 2's 180
    assert (op.throughput, op.concurrency) == (180, 2)
    assert (op.latency_us, op.queue_us) == (12_000, 1000)
    low = operating_point(CURVE, 300, 0.2, "p99")  # 60/s: below the first level, the first
    assert (low.throughput, low.concurrency, low.latency_us) == (100, 1, 10_000)
    with pytest.raises(ValueError, match="utilization"):
        operating_point(CURVE, 300, 1.5, "p99")


def test_no_level_is_read_between_two_measured_ones() -> None:
    """A batcher's cliff: concurrency 3 is slower than 2 under preferred sizes 2 and 4 with a
    long queue delay; the line from 2 to 4 would have promised 32/s there."""
    curve = [point(2, 18, 120), point(4, 45, 180)]
    op = operating_point(curve, 45, 0.7, "p99")  # 31.5/s
    assert (op.concurrency, op.throughput) == (2, 18)
    assert predict(op, 2) == Prediction(2, 4, 36, 120_000)


def test_fleet_replicas_cost_and_autoscaler() -> None:
    fleet = plan_fleet(1000, MACHINE, CURVE, 300, 0.8, "p99")
    assert fleet.replicas == 5  # 1000 / 240 = 4.17
    assert fleet.headroom == pytest.approx(1 - 1000 / 1500)
    assert fleet.dollars_per_hour == pytest.approx(10.0)
    assert fleet.dollars_per_month == pytest.approx(10.0 * HOURS_PER_MONTH)
    assert fleet.dollars_per_million == pytest.approx(10.0 / (1000 * 3600) * 1e6)
    assert fleet.autoscaler_target_us == 1000
    assert fleet.max_replicas == 10
    # Exactly the planned load of 2 replicas needs 2, not 3.
    assert plan_fleet(480, MACHINE, CURVE, 300, 0.8, "p99").replicas == 2
    with pytest.raises(ValueError, match="above 0|> 0"):
        plan_fleet(0, MACHINE, CURVE, 300, 0.8, "p99")


def test_prediction_is_the_operating_point_times_replicas() -> None:
    op = operating_point(CURVE, 300, 0.8, "p99")  # concurrency 2 per replica
    p = predict(op, 2)
    assert p == Prediction(2, 4, 2 * 180, 12_000)


def outcome_for(land: Landscape, knobs: Knobs, **kw: object) -> Outcome:
    candidate = Candidate(Variant("m", (), "fp32"), knobs)
    land.loaded = candidate
    return find_capacity(land, candidate, **kw)  # type: ignore[arg-type]


def test_capacity_doubles_then_bisects_below_the_budget() -> None:
    land = Landscape(wobble=0.0)
    knobs = Knobs(64, (), 0, 4, 1)
    out = outcome_for(
        land, knobs, start=1, stat="p99", budget_us=30_000, noise=0.01, max_concurrency=256
    )
    loads = [c for _, c in land.measured]
    assert loads[:8] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert out.status == "measured" and out.best is not None
    over = min(c for c in loads if land.point(out.candidate, c).latency_p99_us > 30_000)
    assert out.best.load < over and over / out.best.load <= 1.25 + 1e-9 or over - out.best.load <= 1
    assert len(loads) <= 12


def test_a_candidate_over_budget_at_concurrency_one_is_infeasible() -> None:
    land = Landscape()
    out = outcome_for(
        land, Knobs(8, (), 50_000, 1, 4), start=4, stat="p99", budget_us=20_000, noise=0.01,
        max_concurrency=64,
    )  # fmt: skip
    assert out.status == "infeasible" and out.best is None
    assert [c for _, c in land.measured] == [4, 2, 1]
    assert "concurrency 1" in out.reason


def test_screening_drops_a_worse_challenger_after_one_point() -> None:
    land = Landscape(wobble=0.0)
    fast = Candidate(Variant("m", (), "fp32"), Knobs(64, (), 0, 4, 1))
    reference = land.point(fast, 64)
    out = outcome_for(
        land, Knobs(64, (), 0, 1, 1), start=1, stat="p99", budget_us=40_000, noise=0.01,
        max_concurrency=256, screen=Screen(reference, over=None),
    )  # fmt: skip
    assert out.status == "screened" and len(land.measured) == 1
    assert "no better than the incumbent at concurrency 64" in out.reason


def test_a_tied_challenger_must_hold_the_budget_where_the_incumbent_broke_it() -> None:
    land = Landscape(wobble=0.0)
    knobs = Knobs(64, (), 0, 4, 1)
    same = Candidate(Variant("m", (), "fp32"), knobs)
    over = next(c for c in range(64, 512) if land.point(same, c).latency_p99_us > 40_000)
    out = outcome_for(
        land, knobs, start=1, stat="p99", budget_us=40_000, noise=0.01, max_concurrency=512,
        screen=Screen(land.point(same, 64), over=over),
    )  # fmt: skip
    # Tied at 64; over budget where the incumbent was: dropped after two points.
    assert out.status == "screened" and [c for _, c in land.measured] == [64, over]
    assert "over budget at" in out.reason
    # The same challenger screened against an incumbent that broke the budget sooner holds
    # it there, and its capacity search goes on from that load.
    land.measured.clear()
    out = outcome_for(
        land, knobs, start=1, stat="p99", budget_us=40_000, noise=0.01, max_concurrency=512,
        screen=Screen(land.point(same, 64), over=over - 40),
    )  # fmt: skip
    assert out.status == "measured" and [c for _, c in land.measured][:2] == [64, over - 40]


def test_ties_go_to_the_lower_latency() -> None:
    a, b, c = point(1, 100.0, 20), point(2, 100.5, 10), point(3, 90, 5)
    assert pick([a, b, c], "p99", 0.01, key=lambda m: m) is b
    assert pick([a, c], "p99", 0.0, key=lambda m: m) is a


def test_pareto_front_keeps_the_undominated_points() -> None:
    cand = Candidate(Variant("m"), Knobs(8, (), 0, 1, 0))
    outcome = Outcome(
        cand,
        "measured",
        points=[Point(m) for m in (point(1, 100, 5), point(2, 150, 9), point(3, 140, 12),
                                   point(4, 160, 20), point(5, 160, 25))],
    )  # fmt: skip
    front = pareto_front([outcome], "p99")
    assert [fp.measurement.concurrency for fp in front] == [1, 2, 4]
