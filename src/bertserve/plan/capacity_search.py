"""One candidate's capacity under the latency budget: the highest throughput any concurrency
gives it with the judged latency within the budget, found in a few measured points.

Closed-loop throughput rises with concurrency until the server saturates, and latency rises
with it; so the search doubles the concurrency from a starting point while the budget holds
and the throughput still grows by more than the noise, steps down (halving) when the start
is already over budget, and bisects between the last point within budget and the first over
it until the two are close. A candidate over budget at concurrency 1 cannot meet the budget
at any load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from bertserve.perf.results import Measurement
from bertserve.plan.knobs import Candidate

__all__ = [
    "Bench",
    "CandidateFailed",
    "OutOfPoints",
    "Outcome",
    "Point",
    "Screen",
    "best_within",
    "find_capacity",
    "pick",
]

T = TypeVar("T")

#: Bisection stops once the highest concurrency within budget is this close (as a ratio) to
#: the lowest over it.
BISECT_RATIO = 1.25
#: Most bisection steps per candidate.
BISECT_STEPS = 2


class CandidateFailed(Exception):
    """The server would not load a candidate (the message says why); the search goes on."""


class OutOfPoints(Exception):
    """The bench may measure no more points (the plan's measurement limit): a candidate's
    search ends with what it has."""


@dataclass(frozen=True, slots=True)
class Point:
    """One measured load level of one candidate."""

    measurement: Measurement
    #: Relative spread of throughput over the windows merged into the point: (max - min) /
    #: mean of the stable windows.
    spread: float = 0.0


class Bench(Protocol):
    """Where candidates are loaded and measured: the real server (`session.ServerBench`) or,
    in tests, a planted landscape."""

    def prepare(self, candidate: Candidate) -> None:
        """Load the candidate; raise CandidateFailed when the server refuses it."""

    def measure(self, candidate: Candidate, concurrency: int) -> Point:
        """One point at this concurrency, measured as `bertserve perf` measures it."""


#: measured: capacity found; screened: dropped after one point, no better than the incumbent;
#: infeasible: over budget even at concurrency 1; failed: the server refused to load it;
#: pruned: never measured (the reason says why it cannot win).
Status = Literal["measured", "screened", "infeasible", "failed", "pruned"]


@dataclass
class Outcome:
    """What the search learned about one candidate."""

    candidate: Candidate
    status: Status
    #: Why infeasible, failed or pruned; empty when measured.
    reason: str = ""
    points: list[Point] = field(default_factory=list)
    #: The highest-throughput point within budget (ties: lower latency); None if none.
    best: Measurement | None = None
    #: Order in which candidates were decided (1 = first); pruned ones count too.
    order: int = 0
    #: Which move led here ("seed", "variant", "instances up"...).
    via: str = ""

    @property
    def throughput(self) -> float:
        return self.best.throughput if self.best is not None else 0.0

    @property
    def measurements(self) -> list[Measurement]:
        return sorted((p.measurement for p in self.points), key=lambda m: m.load)


def best_within(
    points: list[Point], stat: str, budget_us: float, noise: float = 0.0
) -> Measurement | None:
    """The point to run a candidate at: among those within budget and without errors, the
    quickest of the ones whose throughput is within the noise of the highest (a tie on
    throughput goes to latency)."""
    within = [
        p.measurement
        for p in points
        if p.measurement.errors == 0 and p.measurement.latency_us(stat) <= budget_us
    ]
    if not within:
        return None
    return pick(within, stat, noise, key=lambda m: m)


def pick(items: list[T], stat: str, noise: float, key: Callable[[T], Measurement]) -> T:
    """The item whose measurement has the lowest `stat` latency among those within `noise`
    of the highest throughput (the planner's objective and its tie rule)."""
    top = max(key(item).throughput for item in items)
    tied = [item for item in items if key(item).throughput * (1 + noise) >= top]
    return min(tied, key=lambda item: (key(item).latency_us(stat), -key(item).throughput))


@dataclass(frozen=True)
class Screen:
    """The incumbent a challenger is screened against: its point at its highest load within
    budget, and the lowest load at which it broke the budget (None when saturation, not the
    budget, stopped it)."""

    reference: Measurement
    over: int | None = None

    @property
    def level(self) -> int:
        return int(self.reference.load)


def find_capacity(
    bench: Bench,
    candidate: Candidate,
    *,
    start: int,
    stat: str,
    budget_us: float,
    noise: float,
    max_concurrency: int,
    screen: Screen | None = None,
    on_point: Callable[[Candidate, Point], None] | None = None,
) -> Outcome:
    """Measure `candidate` (already loaded) from concurrency `start` until its capacity
    within the budget is known; see the module docstring.

    With a `screen`, the candidate is first measured at the incumbent's highest load within
    budget, and dropped there unless it is better (more throughput or less latency, by more
    than `noise`) or tied; a tie must then stay within budget where the incumbent broke it."""
    points: dict[int, Point] = {}

    def measure(concurrency: int) -> Point:
        point = bench.measure(candidate, concurrency)
        points[concurrency] = point
        if on_point is not None:
            on_point(candidate, point)
        return point

    try:
        return _search_loads(
            measure, points, candidate, start, stat, budget_us, noise, max_concurrency, screen
        )
    except OutOfPoints:
        found = list(points.values())
        return Outcome(
            candidate,
            "measured",
            "cut short by the measurement limit" if found else "not measured: no points left",
            points=found,
            best=best_within(found, stat, budget_us, noise),
        )


def _search_loads(
    measure: Callable[[int], Point],
    points: dict[int, Point],
    candidate: Candidate,
    start: int,
    stat: str,
    budget_us: float,
    noise: float,
    max_concurrency: int,
    screen: Screen | None,
) -> Outcome:

    def within(point: Point) -> bool:
        m = point.measurement
        return m.errors == 0 and m.latency_us(stat) <= budget_us

    level = max(1, min(screen.level if screen else start, max_concurrency))
    point = measure(level)
    if screen is not None and not _beats(point.measurement, screen.reference, stat, noise):
        ours, theirs = point.measurement, screen.reference
        tied = within(point) and ours.throughput >= theirs.throughput * (1 - noise)
        reason = (
            f"no better than the incumbent at concurrency {level}: {ours.throughput:.1f} vs "
            f"{theirs.throughput:.1f} inferences/s, {stat} {ours.latency_us(stat) / 1000:.1f} "
            f"vs {theirs.latency_us(stat) / 1000:.1f} ms"
        )
        held = False
        if tied and screen.over is not None and screen.over <= max_concurrency:
            pushed = measure(screen.over)
            held = within(pushed)
            if held:
                level, point = screen.over, pushed
            else:
                reason += f", and over budget at {screen.over} as the incumbent was"
        if not held:
            found = list(points.values())
            return Outcome(
                candidate,
                "screened",
                reason,
                points=found,
                best=best_within(found, stat, budget_us, noise),
            )
    over: int | None = None
    if not within(point):
        over = level
        while level > 1:
            level = max(1, level // 2)
            point = measure(level)
            if within(point):
                break
            over = level
        if not within(point):
            return Outcome(
                candidate,
                "infeasible",
                f"{stat} {point.measurement.latency_us(stat) / 1000:.1f} ms at concurrency 1 "
                f"is over the budget of {budget_us / 1000:g} ms",
                points=list(points.values()),
            )
    else:
        while level < max_concurrency:
            higher = min(level * 2, max_concurrency)
            up = points.get(higher) or measure(higher)
            if not within(up):
                over = higher
                break
            gained = up.measurement.throughput > point.measurement.throughput * (1 + noise)
            level, point = higher, up
            if not gained:
                break  # saturated: more requests in flight only wait longer
    if over is not None:
        low = level
        for _ in range(BISECT_STEPS):
            if over - low <= 1 or over / low <= BISECT_RATIO:
                break
            middle = (low + over) // 2
            if within(points.get(middle) or measure(middle)):
                low = middle
            else:
                over = middle
    found = list(points.values())
    best = best_within(found, stat, budget_us, noise)
    return Outcome(candidate, "measured", points=found, best=best)


def _beats(ours: Measurement, theirs: Measurement, stat: str, noise: float) -> bool:
    if ours.errors:
        return False
    faster = ours.throughput > theirs.throughput * (1 + noise)
    quicker = ours.latency_us(stat) < theirs.latency_us(stat) * (1 - noise)
    return faster or quicker
