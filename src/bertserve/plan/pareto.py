"""The Pareto front of a search: the measured points no other point beats on both throughput
and latency. Cost per million inferences falls as throughput rises on one machine, so the
same points are the front of cost against latency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bertserve.perf.results import Measurement
from bertserve.plan.capacity_search import Outcome

__all__ = ["FrontPoint", "pareto_front"]


@dataclass(frozen=True)
class FrontPoint:
    outcome: Outcome
    measurement: Measurement


def pareto_front(outcomes: Sequence[Outcome], stat: str) -> list[FrontPoint]:
    """Points without errors that no other point dominates (at least as much throughput and
    at most as much latency, one of them strictly), by throughput."""
    points = [
        FrontPoint(o, p.measurement) for o in outcomes for p in o.points if not p.measurement.errors
    ]
    front: list[FrontPoint] = []
    best_latency = float("inf")
    # Highest throughput first; a point joins the front when it is quicker than all before.
    for fp in sorted(
        points, key=lambda f: (-f.measurement.throughput, f.measurement.latency_us(stat))
    ):
        latency = fp.measurement.latency_us(stat)
        if latency < best_latency:
            front.append(fp)
            best_latency = latency
    return sorted(front, key=lambda f: f.measurement.throughput)
