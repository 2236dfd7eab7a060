"""The search: from the config the server has loaded, climb towards the highest throughput
within the latency budget (the lowest dollars per million inferences on any one machine),
one knob step at a time, measuring only what can still win.

1. The seed (the config loaded now) is measured, and its best point measured again: the
   relative difference of the two throughputs, floored at `noise_floor`, is the noise. A
   gain smaller than the noise is no gain. When the seed meets no budget (or is pruned:
   say it oversubscribes the machine), the first candidate of the climb that does is
   repeated instead, and until then the floor stands.
2. Each other variant of the model (a sibling in the repository such as the INT8 twin, or a
   precision of the GPU engine) is measured at the seed's knobs; the climb starts from the
   best of them.
3. Climb: the neighbours of the incumbent (one step along one knob's ladder, the last
   successful move first) are tried in turn. Each is first measured at the incumbent's
   highest load within budget; one no better there than the incumbent (throughput not
   higher, latency not lower, by more than the noise) is dropped after that one point,
   unless it ties and also holds the budget at the load where the incumbent broke it.
   A pruned neighbour gives way to the next step of the same move. The first neighbour
   that beats the incumbent by more than the noise becomes the incumbent, and the climb
   goes on from it. It stops when no neighbour does.
4. The other variants are measured at the winner's knobs; one that beats the winner climbs
   in its turn.

Candidates that cannot win are never measured (each pruned one is recorded with why):
- a queue delay at least the budget less the variant's latency floor, once a lone request
  was seen to wait the delay (it then waits it all; when the load is high enough for
  batches to fill first, the delay does not matter and a shorter one is the same
  configuration);
- a variant (and thread count, or fewer) whose lone request is already over budget;
- a max_batch_size above twice the most requests ever in flight within budget for that
  variant (a batch never holds more requests than are in flight);
- threads x instances above the machine's vCPUs;
- more instances of a variant than a count that already failed to load.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bertserve.perf.results import Measurement
from bertserve.plan.capacity_search import (
    Bench,
    CandidateFailed,
    Outcome,
    OutOfPoints,
    Point,
    Screen,
    find_capacity,
    pick,
)
from bertserve.plan.knobs import Candidate, Knobs, Variant
from bertserve.plan.space import Move, Space

__all__ = ["Noise", "SearchEvents", "SearchResult", "SearchSettings", "search"]


@dataclass(frozen=True)
class SearchSettings:
    #: Latency statistic judged: "p50", "p90", "p95" or "p99".
    stat: str = "p99"
    #: Latency budget in microseconds (inf: none).
    budget_us: float = math.inf
    #: Smallest relative difference counted as a gain, whatever the repeat says.
    noise_floor: float = 0.01
    #: At most this many points are measured (a candidate running when they run out ends
    #: with what it has); the noise repeat and the closing confirmation count too, and the
    #: last point is kept for that confirmation...
    max_measurements: int = 100
    #: ... and no new candidate starts after this many seconds.
    max_seconds: float = math.inf
    #: Highest concurrency tried.
    max_concurrency: int = 256
    #: Inferences per request (`-b`).
    client_batch: int = 1


@dataclass(frozen=True)
class Noise:
    """How big a difference must be to count: from one measurement repeated."""

    value: float
    #: The first and repeated throughput of the best point repeated (None: not repeated).
    first: float | None = None
    repeat: float | None = None
    concurrency: int | None = None
    #: Whose point was repeated: "the seed's", or when the seed met no budget (or was
    #: pruned) the first candidate of the climb that did.
    of: str = "the seed's"

    def text(self) -> str:
        if self.first is None or self.repeat is None:
            return f"{self.value:.1%} (the floor; no candidate within budget to repeat)"
        return (
            f"{self.value:.1%}: {self.of} best point (concurrency {self.concurrency}) measured "
            f"twice gave {self.first:.1f} and {self.repeat:.1f} inferences/s"
        )


@dataclass
class SearchEvents:
    """Callbacks for a progress display; all optional."""

    on_candidate: Callable[[Candidate, str], None] | None = None
    on_point: Callable[[Candidate, Point], None] | None = None
    on_outcome: Callable[[Outcome], None] | None = None


@dataclass
class SearchResult:
    #: Every candidate decided, in order (pruned and failed ones too).
    outcomes: list[Outcome]
    seed: Outcome
    #: The candidate to deploy: lowest cost (highest throughput within budget), ties within
    #: the noise going to the lower latency; None when nothing met the budget.
    winner: Outcome | None
    noise: Noise
    #: Points measured in all (each one a load level measured to stability).
    measurements: int
    #: Why the search ended.
    stopped: str
    #: The winner's best point measured once more at the end.
    confirmation: Point | None = None

    @property
    def measured(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.points]


class _Exhausted(Exception):
    pass


@dataclass
class _Facts:
    """What measurements taught about a variant, for pruning."""

    #: Lowest latency of a lone request less its queue wait, by threads per instance.
    floor_us: dict[int, float] = field(default_factory=dict)
    #: Whether a lone request was seen to wait the queue delay (the batcher holds a batch
    #: that cannot fill); None until a candidate with a delay was measured at concurrency 1.
    waits_delay: bool | None = None
    #: Most inferences in flight within budget, any candidate.
    reach: int = 0
    #: Fewest instances that failed to load.
    failed_instances: int | None = None


class _Counted:
    """The bench, counting measured points, and refusing more than `limit`. The last
    `reserve` points are kept for the closing confirmation of the winner (`reserved=True`), so
    that a search cut short by the limit still checks its answer once."""

    def __init__(self, bench: Bench, limit: int, reserve: int = 0) -> None:
        self.bench = bench
        self.limit = limit
        self.reserve = reserve
        self.count = 0

    @property
    def spent(self) -> bool:
        return self.count >= self.limit - self.reserve

    def prepare(self, candidate: Candidate) -> None:
        self.bench.prepare(candidate)

    def measure(self, candidate: Candidate, concurrency: int, reserved: bool = False) -> Point:
        if self.count >= (self.limit if reserved else self.limit - self.reserve):
            raise OutOfPoints
        self.count += 1
        return self.bench.measure(candidate, concurrency)


class _Search:
    def __init__(
        self, bench: Bench, space: Space, settings: SearchSettings, events: SearchEvents
    ) -> None:
        reserve = 1 if settings.max_measurements > 1 else 0  # the winner's confirmation
        self.bench = _Counted(bench, settings.max_measurements, reserve)
        self.space = space
        self.settings = settings
        self.events = events
        self.outcomes: dict[Candidate, Outcome] = {}
        self.facts: dict[Variant, _Facts] = {}
        self.noise = settings.noise_floor
        #: How the noise was measured (None until a candidate met the budget: the first
        #: that does is repeated).
        self.noise_source: Noise | None = None
        self.seed: Outcome | None = None
        self.deadline = time.monotonic() + settings.max_seconds

    # -- bookkeeping

    def _record(self, outcome: Outcome) -> Outcome:
        outcome.order = len(self.outcomes) + 1
        self.outcomes[outcome.candidate] = outcome
        if self.events.on_outcome:
            self.events.on_outcome(outcome)
        return outcome

    def _learn(self, outcome: Outcome) -> None:
        facts = self.facts.setdefault(outcome.candidate.variant, _Facts())
        threads = outcome.candidate.knobs.threads
        stat, budget = self.settings.stat, self.settings.budget_us
        for p in outcome.points:
            m = p.measurement
            if m.errors:
                continue
            if m.concurrency == 1:
                # The median, not the judged tail: a floor must not overstate what a lone
                # request costs, or a candidate that could win would be pruned.
                lone = max(0.0, m.latency_p50_us - m.server_queue_us)
                facts.floor_us[threads] = min(facts.floor_us.get(threads, math.inf), lone)
                delay = outcome.candidate.knobs.queue_delay_us
                if delay and outcome.candidate.knobs.max_batch_size > 1:
                    # A backend with native batch sizes may send a lone request at once.
                    facts.waits_delay = m.server_queue_us >= delay / 2
            if m.latency_us(stat) <= budget and m.concurrency:
                facts.reach = max(facts.reach, m.concurrency * self.settings.client_batch)

    def _pruned(self, candidate: Candidate, incumbent: Candidate | None) -> str | None:
        """Why `candidate` cannot win, known without measuring it; None when it might.
        `incumbent` is the candidate the search would move from."""
        knobs, facts = candidate.knobs, self.facts.get(candidate.variant, _Facts())
        budget = self.settings.budget_us
        if self.space.oversubscribes(knobs):
            return (
                f"{knobs.threads} threads x {knobs.instances} instances oversubscribe the "
                f"{self.space.limits.vcpus} vCPUs"
            )
        if facts.failed_instances is not None and knobs.instances >= facts.failed_instances:
            return f"{facts.failed_instances} instances of this variant already failed to load"
        # Fewer threads never make a lone request quicker.
        floors = [f for t, f in facts.floor_us.items() if t >= knobs.threads]
        if floors and min(floors) > budget:
            return (
                f"a lone request takes {min(floors) / 1000:.1f} ms with "
                f"{knobs.threads or 'the default'} threads or more: over the "
                f"{budget / 1000:g} ms budget"
            )
        known = facts.floor_us.get(knobs.threads)
        waits = facts.waits_delay and knobs.queue_delay_us
        if known is not None and waits and knobs.queue_delay_us >= budget - known:
            return (
                f"a queue delay of {knobs.queue_delay_us} us plus the {known / 1000:.1f} ms a "
                f"lone request takes exceeds the {budget / 1000:g} ms budget"
            )
        grows = incumbent is not None and knobs.max_batch_size > incumbent.knobs.max_batch_size
        if grows and facts.reach and knobs.max_batch_size > 2 * facts.reach:
            return (
                f"a larger batch would never fill: at most {facts.reach} inferences were in "
                "flight within budget"
            )
        return None

    # -- one candidate

    def evaluate(
        self,
        candidate: Candidate,
        via: str,
        against: Outcome | None = None,
        *,
        limited: bool = True,
    ) -> Outcome:
        """Decide `candidate`: pruned, failed to load, or measured (screened against
        `against`, the incumbent). `limited`: subject to the measurement and time limits
        (the seed is measured whatever they say)."""
        if candidate in self.outcomes:
            return self.outcomes[candidate]
        reason = self._pruned(candidate, against.candidate if against else None)
        if reason is not None:
            return self._record(Outcome(candidate, "pruned", reason, via=via))
        if limited and self.bench.spent:
            kept = " (the last kept to confirm the winner)" if self.bench.reserve else ""
            raise _Exhausted(f"the limit of {self.settings.max_measurements} measured points{kept}")
        if limited and time.monotonic() >= self.deadline:
            raise _Exhausted(f"the time limit of {self.settings.max_seconds:g} s")
        if self.events.on_candidate:
            self.events.on_candidate(candidate, via)
        try:
            self.bench.prepare(candidate)
        except CandidateFailed as exc:
            facts = self.facts.setdefault(candidate.variant, _Facts())
            if candidate.knobs.instances > 1:
                known = facts.failed_instances or candidate.knobs.instances
                facts.failed_instances = min(known, candidate.knobs.instances)
            return self._record(Outcome(candidate, "failed", str(exc), via=via))
        screen = self._screen(against) if against is not None else None
        try:
            outcome = find_capacity(
                self.bench,
                candidate,
                start=1,
                stat=self.settings.stat,
                budget_us=self.settings.budget_us,
                noise=self.noise,
                max_concurrency=self.settings.max_concurrency,
                screen=screen,
                on_point=self.events.on_point,
            )
        except CandidateFailed as exc:
            return self._record(Outcome(candidate, "failed", str(exc), via=via))
        outcome.via = via
        self._learn(outcome)
        return self._record(outcome)

    def _screen(self, incumbent: Outcome) -> Screen | None:
        """What a challenger is screened against: the incumbent's highest load within budget
        (at its best load the incumbent may not have been pushed hard enough to show what
        more capacity would give), and the lowest load above it where it broke the budget."""
        stat, budget = self.settings.stat, self.settings.budget_us
        loaded = [p.measurement for p in incumbent.points if p.measurement.concurrency]
        within = [m for m in loaded if m.errors == 0 and m.latency_us(stat) <= budget]
        if not within:
            return None
        highest = max(within, key=lambda m: m.load)
        above = [int(m.load) for m in loaded if m.load > highest.load and m not in within]
        return Screen(highest, min(above, default=None))

    def better(self, a: Outcome, b: Outcome) -> bool:
        """Whether `a` beats `b` by more than the noise: more throughput within budget; when
        neither meets the budget, a lower latency (nearer to meeting it)."""
        if a.points and not b.points:
            # An incumbent never measured (the seed pruned, or failed to load): anything
            # measured is a place to climb from.
            return True
        if a.best is not None and b.best is None:
            return True
        if a.best is not None and b.best is not None:
            return a.best.throughput > b.best.throughput * (1 + self.noise)
        if a.best is None and b.best is None and a.points and b.points:
            stat = self.settings.stat
            return _lowest(a, stat) < _lowest(b, stat) * (1 - self.noise)
        return False

    def repeat(self, outcome: Outcome) -> None:
        """Measure the noise on `outcome` (its best point again, no reload in between) unless
        it was measured already; nothing without a point within budget to repeat."""
        if self.noise_source is not None or outcome.best is None or not outcome.best.concurrency:
            return
        first = outcome.best.throughput
        try:
            again = self.bench.measure(outcome.candidate, outcome.best.concurrency)
        except OutOfPoints:
            return
        mean = (first + again.measurement.throughput) / 2
        value = abs(first - again.measurement.throughput) / mean if mean > 0 else 0.0
        self.noise = max(value, self.settings.noise_floor)
        whose = "the seed's" if outcome is self.seed else f"{outcome.candidate.label}'s"
        self.noise_source = Noise(
            self.noise, first, again.measurement.throughput, outcome.best.concurrency, whose
        )

    # -- the climb

    def _step(self, incumbent: Outcome, move: Move, knobs: Knobs) -> Outcome:
        """The first candidate along `move` that is not pruned (a queue delay too long for
        the budget gives way to the next shorter one); the last pruned one when all are."""
        variant = incumbent.candidate.variant
        while True:
            outcome = self.evaluate(Candidate(variant, knobs), move.text(), against=incumbent)
            if outcome.status != "pruned":
                return outcome
            further = self.space.step(knobs, move)
            if further is None or self.space.canonical(further) == knobs:
                return outcome
            knobs = self.space.canonical(further)

    def climb(self, start: Outcome) -> Outcome:
        incumbent = start
        momentum: list[Move] = []
        while True:
            for move, knobs in self.space.moves(incumbent.candidate.knobs, first=momentum):
                outcome = self._step(incumbent, move, knobs)
                if outcome.points and self.better(outcome, incumbent):
                    incumbent, momentum = outcome, [move]
                    self.repeat(incumbent)
                    break
            else:
                return incumbent


def search(
    bench: Bench,
    space: Space,
    seed: Candidate,
    variants: Sequence[Variant],
    settings: SearchSettings,
    events: SearchEvents | None = None,
) -> SearchResult:
    """Run the search (see the module docstring). `seed` is the config the server has
    loaded now; `variants` the other variants of the model worth trying."""
    run = _Search(bench, space, settings, events or SearchEvents())
    stopped = "no neighbour of the winner beats it by more than the noise"
    seed_outcome = run.evaluate(
        seed, "seed: the config loaded when the plan started", limited=False
    )
    run.seed = seed_outcome
    run.repeat(seed_outcome)
    knobs = space.canonical(seed.knobs)
    others = [v for v in dict.fromkeys(variants) if v != seed.variant]
    try:
        leader = seed_outcome
        for variant in others:
            other = run.evaluate(Candidate(variant, knobs), "another variant", against=leader)
            if run.better(other, leader):
                leader = other
                run.repeat(leader)
        climbed: set[Variant] = set()
        while True:
            climbed.add(leader.candidate.variant)
            best = run.climb(leader)
            challenger = None
            for variant in [seed.variant, *others]:
                if variant in climbed:
                    continue
                other = run.evaluate(
                    Candidate(variant, best.candidate.knobs),
                    "another variant at the winner's knobs",
                    against=best,
                )
                if other.points and run.better(other, best):
                    challenger = other
                    break
            if challenger is None:
                break
            leader = challenger
    except _Exhausted as exc:
        stopped = f"{exc} was reached"
    noise = run.noise_source or Noise(settings.noise_floor)
    outcomes = list(run.outcomes.values())
    winner = _winner(outcomes, settings.stat, run.noise)
    confirmation = None
    if (
        winner is not None
        and winner.best is not None
        and winner.best.concurrency
        and run.bench.count < run.bench.limit
    ):
        with contextlib.suppress(CandidateFailed):  # the search's own answer stands
            run.bench.prepare(winner.candidate)
            confirmation = run.bench.measure(
                winner.candidate, winner.best.concurrency, reserved=True
            )
    return SearchResult(
        outcomes=outcomes,
        seed=seed_outcome,
        winner=winner,
        noise=noise,
        measurements=run.bench.count,
        stopped=stopped,
        confirmation=confirmation,
    )


def _winner(outcomes: list[Outcome], stat: str, noise: float) -> Outcome | None:
    feasible = [o for o in outcomes if o.best is not None]
    if not feasible:
        return None
    return pick(feasible, stat, noise, key=_best)


def _best(outcome: Outcome) -> Measurement:
    assert outcome.best is not None
    return outcome.best


def _lowest(outcome: Outcome, stat: str) -> float:
    return min(p.measurement.latency_us(stat) for p in outcome.points)
