"""Ladders, moves and canonical forms of the search space."""

from __future__ import annotations

from bertserve.plan.knobs import Knobs
from bertserve.plan.space import Limits, Move, Space, halves

SEED = Knobs(max_batch_size=8, preferred=(4, 8), queue_delay_us=2000, instances=1, threads=0)


def cpu(vcpus: int = 4, **limits: object) -> Space:
    return Space(SEED, Limits(vcpus=vcpus, threads=True, max_instances=4, **limits))  # type: ignore[arg-type]


def test_ladders_hold_the_seed_values_and_respect_the_limits() -> None:
    space = Space(
        Knobs(12, (), 3000, 3, 3),
        Limits(client_batch=2, max_batch_size=32, max_instances=4, vcpus=8, threads=True,
               max_delay_us=6000),
    )  # fmt: skip
    assert space.batches == (2, 4, 8, 12, 16, 32)  # no batch below -b 2; the seed's 12 kept
    assert space.delays == (0, 100, 250, 500, 1000, 2000, 3000, 5000)  # below the budget
    assert space.instances == (1, 2, 3, 4)
    assert space.threads == (1, 2, 3, 4, 8)


def test_canonical_forms_merge_what_the_batcher_cannot_tell_apart() -> None:
    space = cpu()
    # One item per batch: no preferred sizes, no delay.
    assert space.canonical(Knobs(1, (1,), 5000, 1, 2)) == Knobs(1, (), 0, 1, 2)
    # Preferring max_batch_size alone is the batcher's default.
    assert space.canonical(Knobs(8, (8,), 0, 1, 2)).preferred == ()
    # Any other preferred sizes become the halves of max_batch_size.
    assert space.canonical(Knobs(8, (1, 3, 7), 0, 1, 2)).preferred == (4, 8)
    # Threads not set: onnxruntime shares the vCPUs among the instances.
    assert space.canonical(Knobs(8, (), 0, 2, 0)).threads == 2
    assert halves(2) == () and halves(16) == (8, 16)


def test_moves_are_one_step_each_distinct_and_the_favoured_first() -> None:
    space = cpu()
    seed = space.canonical(SEED)
    moves = space.moves(seed, first=[Move("queue_delay_us", -1)])
    assert moves[0] == (Move("queue_delay_us", -1), Knobs(8, (4, 8), 1000, 1, 4))
    dims = {m.dimension for m, _ in moves}
    assert dims == {
        "max_batch_size",
        "instances",
        "queue_delay_us",
        "threads",
        "preferred",
        "split",
    }
    targets = [k for _, k in moves]
    assert len(targets) == len(set(targets)) and seed not in targets
    assert (Move("max_batch_size", +1), Knobs(16, (8, 16), 2000, 1, 4)) in moves


def test_split_keeps_every_core_busy() -> None:
    space = cpu(vcpus=4)
    assert space.step(Knobs(8, (), 0, 1, 4), Move("split", +1)) == Knobs(8, (), 0, 2, 2)
    # From 2 x 2, 3 instances could use 3 cores only: the split goes to 4 x 1.
    assert space.step(Knobs(8, (), 0, 2, 2), Move("split", +1)) == Knobs(8, (), 0, 4, 1)
    assert space.step(Knobs(8, (), 0, 4, 1), Move("split", -1)) == Knobs(8, (), 0, 2, 2)
    assert space.step(Knobs(8, (), 0, 4, 1), Move("split", +1)) is None


def test_oversubscription_and_the_grid_size() -> None:
    space = cpu(vcpus=4)
    assert space.oversubscribes(Knobs(8, (), 0, 2, 4))
    assert not space.oversubscribes(Knobs(8, (), 0, 2, 2))
    gpu = Space(Knobs(4, (), 0, 1, 0), Limits(max_instances=2, threads=False, max_batch_size=8))
    assert gpu.threads == (0,)
    assert not gpu.oversubscribes(Knobs(8, (), 0, 2, 0))
    # batches 1..8 (4 sizes) with delays, preferred on/off where they differ, 2 instances.
    assert gpu.size() == 2 * (1 + 1 * 11 + 2 * 11 + 2 * 11)


def test_a_model_without_a_batch_axis_searches_instances_only() -> None:
    space = Space(Knobs(0, (), 0, 1, 0), Limits(batching=False, max_instances=3))
    assert space.batches == (0,) and space.delays == (0,)
    assert {m.dimension for m, _ in space.moves(Knobs(0, (), 0, 1, 0))} == {"instances"}
