"""The search on a planted landscape (tests/plan/landscape.py), whose best configuration is
known by measuring every candidate at every concurrency."""

from __future__ import annotations

import math

import pytest

from bertserve.plan.knobs import Candidate, Knobs, Variant
from bertserve.plan.search import SearchEvents, SearchSettings, search
from bertserve.plan.space import Limits, Space, halves
from tests.plan.landscape import Landscape

FP32 = Variant("m", (), "fp32")
INT8 = Variant("m_int8", (), "int8")
SEED = Knobs(max_batch_size=8, preferred=(4, 8), queue_delay_us=2000, instances=1, threads=0)
BUDGET_MS = 40.0
MAX_CONCURRENCY = 256


def make_space(seed: Knobs = SEED, budget_ms: float = BUDGET_MS, vcpus: int = 4) -> Space:
    limits = Limits(
        vcpus=vcpus,
        threads=True,
        max_delay_us=budget_ms * 1000,
        max_instances=4,
        max_batch_size=64,
    )
    return Space(seed, limits)


def grid(space: Space, variants: list[Variant]) -> list[Candidate]:
    """Every distinct canonical candidate on the ladders (what a grid search would load)."""
    found = []
    for variant in variants:
        for b in space.batches:
            for preferred in (False, True):
                for d in space.delays:
                    for n in space.instances:
                        for t in space.threads:
                            knobs = space.canonical(
                                Knobs(b, halves(b) if preferred else (), d, n, t)
                            )
                            if not space.oversubscribes(knobs):
                                found.append(Candidate(variant, knobs))
    return list(dict.fromkeys(found))


def run(
    land: Landscape,
    space: Space,
    variants: list[Variant],
    budget_ms: float | None = BUDGET_MS,
    **overrides: object,
):
    seed = Candidate(variants[0], space.canonical(space.seed))
    land.loaded = seed
    settings = SearchSettings(
        budget_us=math.inf if budget_ms is None else budget_ms * 1000,
        max_concurrency=MAX_CONCURRENCY,
        **overrides,  # type: ignore[arg-type]
    )
    return search(land, space, seed, variants[1:], settings)


def capacity(land: Landscape, candidate: Candidate, budget_ms: float) -> float:
    best = land.best_exhaustive([candidate], budget_ms, MAX_CONCURRENCY)
    return best[0]


def test_finds_the_planted_best_in_a_fraction_of_the_measurements() -> None:
    land = Landscape()
    space = make_space()
    variants = [FP32, INT8]
    everything = grid(space, variants)
    top, planted, _ = land.best_exhaustive(everything, BUDGET_MS, MAX_CONCURRENCY)
    assert planted.variant == INT8 and planted.knobs.instances * planted.knobs.threads == 4

    result = run(land, space, variants)

    winner = result.winner
    assert winner is not None
    # The winner is the planted configuration's corner of the space: the INT8 variant, every
    # core busy, the largest batch, and as much capacity as the planted best within 3 %.
    assert winner.candidate.variant == INT8
    assert winner.candidate.knobs.instances == planted.knobs.instances
    assert winner.candidate.knobs.threads == planted.knobs.threads
    assert winner.candidate.knobs.max_batch_size == planted.knobs.max_batch_size
    assert capacity(land, winner.candidate, BUDGET_MS) >= 0.97 * top
    assert winner.best is not None and winner.best.latency_p99_us <= BUDGET_MS * 1000
    # A grid measures every candidate at several loads; the climb, a few dozen points.
    assert result.measurements == len(land.measured)
    assert result.measurements < 0.05 * len(everything)
    assert result.stopped.startswith("no neighbour")


def test_never_loads_a_candidate_that_oversubscribes_the_cores() -> None:
    land = Landscape()
    space = make_space()
    result = run(land, space, [FP32, INT8])
    assert all(c.knobs.instances * c.knobs.threads <= 4 for c in land.prepared)
    pruned = [o for o in result.outcomes if o.status == "pruned"]
    assert any("oversubscribe" in o.reason for o in pruned)
    assert all(not o.points for o in pruned)


def test_an_over_budget_seed_climbs_to_a_config_within_budget() -> None:
    # A 50 ms queue delay: a lone request waits it all, far over a 20 ms budget.
    seed = Knobs(8, (4, 8), 50_000, 1, 0)
    space = make_space(seed, budget_ms=20.0)
    land = Landscape()
    result = run(land, space, [FP32], budget_ms=20.0)
    assert result.seed.status == "infeasible"
    assert result.seed.best is None
    winner = result.winner
    assert winner is not None and winner.best is not None
    assert winner.best.latency_p99_us <= 20_000
    assert winner.candidate.knobs.queue_delay_us < 20_000
    # Nothing of the seed's to repeat: the first candidate within budget gave the noise.
    assert result.noise.first is not None and result.noise.of != "the seed's"


def test_a_seed_that_oversubscribes_the_cores_is_pruned_and_the_climb_goes_on() -> None:
    # Two single-threaded instances on one vCPU waiting up to 2 s for a batch: the config
    # `bertserve build` writes, served by a one-CPU replica.
    seed = Knobs(4, (), 2_000_000, 2, 1)
    land = Landscape(vcpus=1)
    result = run(land, make_space(seed, vcpus=1), [FP32])
    assert result.seed.status == "pruned" and not result.seed.points
    assert all(c.knobs.instances * c.knobs.threads <= 1 for c in land.prepared)
    winner = result.winner
    assert winner is not None and winner.best is not None
    assert winner.best.latency_p99_us <= BUDGET_MS * 1000
    assert result.noise.first is not None and result.noise.of != "the seed's"


def test_a_variant_that_fails_to_load_is_recorded_and_the_search_goes_on() -> None:
    land = Landscape(fail_instances=3)
    space = make_space()
    result = run(land, space, [FP32, INT8])
    failed = [o for o in result.outcomes if o.status == "failed"]
    assert failed and all("out of memory" in o.reason for o in failed)
    # Once 3 instances failed, no larger count of that variant is loaded.
    for variant in (FP32, INT8):
        counts = [o.candidate.knobs.instances for o in failed if o.candidate.variant == variant]
        assert len(counts) <= 1
    assert result.winner is not None
    assert result.winner.candidate.knobs.instances < 3


def test_without_a_budget_the_highest_throughput_wins() -> None:
    land = Landscape()
    space = make_space(budget_ms=math.inf)
    result = run(land, space, [FP32, INT8], budget_ms=None)
    assert result.winner is not None
    top = max(
        (o for o in result.outcomes if o.best is not None), key=lambda o: o.throughput
    ).throughput
    assert result.winner.throughput * (1 + result.noise.value) >= top


def test_nothing_within_budget_has_no_winner() -> None:
    land = Landscape()
    space = make_space(budget_ms=0.5)
    result = run(land, space, [FP32, INT8], budget_ms=0.5)
    assert result.winner is None
    assert result.confirmation is None
    # Each variant is over budget at concurrency 1, and a lone request alone takes longer
    # than the budget: nothing else is measured.
    assert [o.status for o in result.outcomes if o.points] == ["infeasible", "infeasible"]
    assert result.measurements == 2
    reasons = [o.reason for o in result.outcomes if not o.points]
    assert all("a lone request takes" in r or "oversubscribe" in r for r in reasons)


def test_the_measurement_limit_ends_the_search_with_its_best_so_far() -> None:
    land = Landscape()
    space = make_space()
    result = run(land, space, [FP32, INT8], max_measurements=8)
    assert "limit of 8 measured points (the last kept to confirm the winner)" in result.stopped
    assert result.winner is not None and result.winner.best is not None
    # A hard limit: the candidate running when the points ran out ends with what it has...
    assert result.measurements == 8
    # ... and the winner is measured once more with the point kept for it.
    assert result.confirmation is not None
    assert result.confirmation.measurement.load == result.winner.best.concurrency


def test_noise_is_the_repeat_of_the_seeds_best_point() -> None:
    land = Landscape(wobble=0.05)
    space = make_space()
    result = run(land, space, [FP32])
    noise = result.noise
    assert noise.first is not None and noise.repeat is not None
    expected = abs(noise.first - noise.repeat) / ((noise.first + noise.repeat) / 2)
    assert noise.value == pytest.approx(max(expected, 0.01))
    assert noise.concurrency == result.seed.best.concurrency  # type: ignore[union-attr]


def test_a_gain_under_the_noise_does_not_move_the_climb() -> None:
    # With a 10 % noise floor, the 3 % the preferred sizes give is no gain.
    land = Landscape(wobble=0.0)
    space = make_space()
    result = run(land, space, [FP32], noise_floor=0.10)
    for o in result.outcomes:
        if o.via == "preferred sizes off" and o.points:
            assert o.status == "screened"


def test_events_see_every_candidate_point_and_outcome() -> None:
    land = Landscape()
    space = make_space()
    seen: dict[str, int] = {"candidate": 0, "point": 0, "outcome": 0}
    events = SearchEvents(
        on_candidate=lambda c, via: seen.__setitem__("candidate", seen["candidate"] + 1),
        on_point=lambda c, p: seen.__setitem__("point", seen["point"] + 1),
        on_outcome=lambda o: seen.__setitem__("outcome", seen["outcome"] + 1),
    )
    seed = Candidate(FP32, space.canonical(SEED))
    land.loaded = seed
    result = search(land, space, seed, [INT8], SearchSettings(budget_us=BUDGET_MS * 1000), events)
    assert seen["outcome"] == len(result.outcomes)
    assert seen["candidate"] == sum(1 for o in result.outcomes if o.status != "pruned")
    # The noise repeat and the closing confirmation are measured outside any candidate.
    assert seen["point"] == result.measurements - 2


def test_the_time_limit_still_measures_the_seed() -> None:
    land = Landscape()
    space = make_space()
    result = run(land, space, [FP32, INT8], max_seconds=0.0)
    assert "time limit of 0 s" in result.stopped
    assert [o.candidate for o in result.outcomes] == [result.seed.candidate]
    assert result.winner is result.seed


def test_a_delay_is_pruned_only_once_lone_requests_were_seen_to_wait_it() -> None:
    seed = Knobs(8, (4, 8), 50_000, 1, 0)
    space = make_space(seed, budget_ms=20.0)
    # This batcher sends a batch that cannot fill at once: the 50 ms delay costs nothing.
    result = run(Landscape(waits=False), space, [FP32], budget_ms=20.0)
    assert result.seed.status == "measured" and result.seed.best is not None
    assert not [o for o in result.outcomes if "queue delay of" in o.reason]
    # This one holds it: the seed is over budget, and longer delays are never measured.
    result = run(Landscape(), space, [FP32], budget_ms=20.0)
    assert result.seed.status == "infeasible"
    pruned = [o for o in result.outcomes if "queue delay of" in o.reason]
    assert pruned and all(not o.points for o in pruned)


def test_the_measurement_limit_is_hard_even_inside_a_candidate() -> None:
    land = Landscape()
    result = run(land, make_space(), [FP32, INT8], max_measurements=3)
    assert result.measurements == len(land.measured) == 3
    assert result.seed.reason == "cut short by the measurement limit"
    assert result.seed.best is not None  # what it measured still counts
    assert result.noise.first is None
    assert result.confirmation is not None  # the third point, kept for it
