"""The model of capacity: one replica's measured curve, run at a target utilization, times
replicas. From it: how many replicas a target load needs, what they cost, the queue time an
autoscaler should hold, and what a fleet of N replicas should deliver (checked against
measurement by benchmarks/plan_fleet.py).

A replica's capacity is its highest throughput within the latency budget. Planned at a
utilization u < 1, each replica carries u x capacity; the headroom 1 - u absorbs bursts and
the time an autoscaler takes to add a replica. The operating point (concurrency, latency,
queue time at u x capacity) is interpolated along the measured curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bertserve.cost.catalog import Machine
from bertserve.cost.model import cost_per_million
from bertserve.perf.results import Measurement

__all__ = [
    "HOURS_PER_MONTH",
    "FleetPlan",
    "OperatingPoint",
    "Prediction",
    "operating_point",
    "plan_fleet",
    "predict",
]

#: 365 x 24 / 12, the month cloud price pages use.
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class OperatingPoint:
    """One replica run at `utilization` of its capacity, read off its curve."""

    utilization: float
    throughput: float
    concurrency: float
    latency_us: float
    queue_us: float


@dataclass(frozen=True)
class FleetPlan:
    qps: float
    machine: Machine
    #: One replica's capacity within the budget, inferences/s.
    capacity: float
    utilization: float
    replicas: int
    point: OperatingPoint

    @property
    def headroom(self) -> float:
        """Share of the fleet's capacity left over at the target load."""
        return 1 - self.qps / (self.replicas * self.capacity)

    @property
    def dollars_per_hour(self) -> float:
        return self.replicas * self.machine.price_per_hour

    @property
    def dollars_per_month(self) -> float:
        return self.dollars_per_hour * HOURS_PER_MONTH

    @property
    def dollars_per_million(self) -> float:
        """What a million inferences cost at the target load, headroom paid for."""
        return cost_per_million(self.dollars_per_hour, self.qps)

    @property
    def autoscaler_target_us(self) -> int:
        """Mean queue time per request at the operating point: above it, the replicas carry
        more than `utilization` of their capacity and one more is needed. At least 1 us."""
        return max(1, round(self.point.queue_us))

    @property
    def max_replicas(self) -> int:
        """Room for the autoscaler: twice the planned fleet (at least one more replica)."""
        return max(self.replicas + 1, 2 * self.replicas)


@dataclass(frozen=True)
class Prediction:
    """What `replicas` replicas behind a balancer should measure, driven with `concurrency`
    requests in flight in all."""

    replicas: int
    concurrency: int
    throughput: float
    latency_us: float


def operating_point(
    points: Sequence[Measurement], capacity: float, utilization: float, stat: str
) -> OperatingPoint:
    """Where one replica runs when it carries at most `utilization` x `capacity`: the
    measured load level with the highest throughput at or under that (below the first level,
    the first), with that level's own throughput, latency and queue time.

    Never a reading between two levels: with a dynamic batcher's queue delay the curve is not
    linear between them. Three requests in flight under preferred batch sizes of 2 and 4 leave
    one waiting out the whole delay for a partner, so concurrency 3 can serve less than
    concurrency 2 (measured: 17/s where the line from 2 to 4 read 32/s)."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must lie in (0, 1], not {utilization}")
    curve = sorted((m for m in points if m.concurrency and m.errors == 0), key=lambda m: m.load)
    if not curve or capacity <= 0:
        raise ValueError("no measured point to read the curve from")
    target = utilization * capacity
    under = [m for m in curve if m.throughput <= target]
    level = max(under, key=lambda m: m.throughput) if under else curve[0]
    return OperatingPoint(
        utilization, level.throughput, level.load, level.latency_us(stat), level.server_queue_us
    )


def plan_fleet(
    qps: float,
    machine: Machine,
    points: Sequence[Measurement],
    capacity: float,
    utilization: float,
    stat: str,
) -> FleetPlan:
    """Replicas of `machine` to carry `qps` inferences/s at `utilization` of each one's
    `capacity`."""
    if qps <= 0:
        raise ValueError(f"the target load must be > 0 inferences/s, not {qps}")
    replicas = max(1, math.ceil(qps / (utilization * capacity) - 1e-9))
    point = operating_point(points, capacity, utilization, stat)
    return FleetPlan(qps, machine, capacity, utilization, replicas, point)


def predict(point: OperatingPoint, replicas: int) -> Prediction:
    """N replicas behind a balancer, driven with N times the operating point's concurrency:
    N times its throughput, at its latency (the balancer spreads requests evenly, and the
    replicas share no hardware)."""
    total = max(replicas, round(point.concurrency * replicas))
    return Prediction(replicas, total, point.throughput * replicas, point.latency_us)
