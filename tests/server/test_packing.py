"""Variable-length batching: packing rows, unpacking outputs, and the token-budget batcher."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from bertserve.backends.base import ModelInstance
from bertserve.backends.packing import PackedBatch, PackingSpec, pack, row_lengths, unpack
from bertserve.batching import BatchingPolicy, Scheduler
from bertserve.errors import InvalidInput
from bertserve.stats import ModelStats, RequestTiming

SPEC = PackingSpec(max_tokens=64, max_rows=8, length_input="mask")


def _request(rng: np.random.Generator, rows: int, width: int, pad: int = 0) -> dict:
    ids = rng.integers(1, 1000, size=(rows, width), dtype=np.int64)
    mask = np.ones((rows, width), dtype=np.int64)
    for r in range(rows):
        cut = width - (pad * r) % (width + 1)
        mask[r, cut:] = 0
    return {"ids": ids, "mask": mask}


def test_pack_keeps_real_tokens_in_order_and_unpack_restores_shapes() -> None:
    rng = np.random.default_rng(0)
    requests = [_request(rng, 2, 5), _request(rng, 3, 7, pad=2), _request(rng, 1, 4)]
    batch = pack(requests, SPEC)
    assert list(batch.lengths) == [5, 5, 7, 5, 3, 4]
    assert batch.total_tokens == 29 and batch.rows == 6
    assert set(batch.tokens) == {"ids"}  # the mask is consumed, not packed
    expected = np.concatenate([r["ids"][r["mask"] == 1] for r in requests])
    np.testing.assert_array_equal(batch.tokens["ids"], expected)
    # An "output" that is the token id itself must come back where each token was.
    parts = unpack({"y": batch.tokens["ids"].astype(np.float32)}, batch, fill=-7.0)
    for request, part in zip(requests, parts, strict=True):
        keep = request["mask"] == 1
        assert part["y"].shape == request["ids"].shape
        np.testing.assert_array_equal(part["y"][keep], request["ids"][keep])
        assert np.all(part["y"][~keep] == -7.0)


def test_positions_count_from_zero_in_every_row_trimmed_or_full() -> None:
    rng = np.random.default_rng(7)
    requests = [_request(rng, 3, 6, pad=2), _request(rng, 2, 4), _request(rng, 2, 5, pad=1)]
    batch = pack(requests, SPEC)
    expected = np.concatenate([np.arange(n) for n in batch.lengths])
    np.testing.assert_array_equal(batch.positions, expected)
    assert batch.positions.dtype == np.int64 and len(batch.positions) == batch.total_tokens


def test_unpack_gives_each_trimmed_request_its_own_block() -> None:
    rng = np.random.default_rng(8)
    requests = [_request(rng, 2, 4, pad=1), _request(rng, 3, 5, pad=2)]
    batch = pack(requests, SPEC)
    first, second = unpack({"y": np.ones(batch.total_tokens, np.float32)}, batch, fill=0.0)
    first["y"][:] = 42.0  # a caller may write its own outputs: the other's must not change
    assert not np.any(second["y"] == 42.0)
    np.testing.assert_array_equal(second["y"], requests[1]["mask"].astype(np.float32))


def test_unpack_of_untrimmed_requests_gives_views() -> None:
    rng = np.random.default_rng(1)
    requests = [_request(rng, 2, 3), _request(rng, 1, 6)]
    batch = pack(requests, SPEC)
    flat = np.arange(batch.total_tokens, dtype=np.float32)
    parts = unpack({"y": flat}, batch, fill=0.0)
    assert parts[0]["y"].base is flat and parts[1]["y"].base is flat
    np.testing.assert_array_equal(parts[1]["y"], [[6, 7, 8, 9, 10, 11]])


def test_without_a_length_input_rows_are_full_width() -> None:
    batch = pack([{"ids": np.ones((2, 3), np.int64)}], PackingSpec(64, 8))
    assert list(batch.lengths) == [3, 3]


def test_a_mask_with_holes_is_refused_by_name() -> None:
    bad = {"ids": np.ones((1, 4), np.int64), "mask": np.array([[1, 0, 1, 0]])}
    with pytest.raises(InvalidInput, match="'mask' must be right-padded"):
        pack([bad], SPEC)


@pytest.mark.parametrize(
    "row",
    [[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 0, 1]],
)
def test_every_kind_of_hole_is_found(row: list[int]) -> None:
    mask = np.array([[1, 1, 1, 1], row, [1, 1, 0, 0]])
    with pytest.raises(InvalidInput, match="right-padded"):
        row_lengths({"ids": np.ones((3, 4), np.int64), "mask": mask}, SPEC)


def test_row_lengths_of_right_padded_masks() -> None:
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0], [2, 0, 0, 0]])
    got = row_lengths({"mask": mask}, SPEC)
    assert got is not None and got.tolist() == [4, 0, 2, 1]
    assert row_lengths({"mask": np.ones((2, 3), np.int64)}, SPEC) is None
    assert row_lengths({"mask": np.ones((2, 0), np.int64)}, SPEC) is None


def test_a_batch_of_mixed_requests_round_trips() -> None:
    rng = np.random.default_rng(3)
    requests = [
        _request(rng, int(rng.integers(1, 4)), int(rng.integers(2, 9)), pad=int(rng.integers(0, 3)))
        for _ in range(12)
    ]
    batch = pack(requests, SPEC)
    expected = np.concatenate([r["ids"][r["mask"] == 1] for r in requests])
    np.testing.assert_array_equal(batch.tokens["ids"], expected)
    outputs = {
        "y": np.stack([batch.tokens["ids"], -batch.tokens["ids"]], axis=1).astype(np.float32)
    }
    parts = unpack(outputs, batch, fill=-7.0)
    for request, part in zip(requests, parts, strict=True):
        keep = request["mask"] == 1
        assert part["y"].shape == (*request["ids"].shape, 2)
        np.testing.assert_array_equal(part["y"][keep][:, 0], request["ids"][keep])
        np.testing.assert_array_equal(part["y"][keep][:, 1], -request["ids"][keep])
        assert np.all(part["y"][~keep] == -7.0)


def test_inputs_of_different_shapes_are_refused() -> None:
    bad = {"ids": np.ones((1, 4), np.int64), "mask": np.ones((1, 5), np.int64)}
    with pytest.raises(InvalidInput, match="disagree"):
        pack([bad], SPEC)
    with pytest.raises(InvalidInput, match=r"\[batch, tokens\]"):
        pack([{"ids": np.ones(4, np.int64)}], SPEC)


def test_rows_with_no_tokens_pack_to_nothing_and_unpack_to_fill() -> None:
    request = {"ids": np.ones((2, 3), np.int64), "mask": np.array([[1, 1, 0], [0, 0, 0]])}
    batch = pack([request], SPEC)
    assert list(batch.lengths) == [2, 0]
    (part,) = unpack({"y": np.array([5.0, 6.0], np.float32)}, batch, fill=-1.0)
    np.testing.assert_array_equal(part["y"], [[5, 6, -1], [-1, -1, -1]])


# ---- the token-budget batcher --------------------------------------------------------------
class Packer(ModelInstance):
    """A packing instance whose output is 2 x the token id; records each batch's shape."""

    def __init__(self, spec: PackingSpec = SPEC) -> None:
        self.packing = spec
        self.batches: list[tuple[int, int]] = []  # (rows, tokens)
        self.gate = threading.Event()
        self.gate.set()

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise AssertionError("a packing instance is driven through launch_packed")

    def launch_packed(
        self, batch: PackedBatch, outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        self.gate.wait(5)
        self.batches.append((batch.rows, batch.total_tokens))
        y = batch.tokens["ids"].astype(np.float32) * 2
        return lambda: {"y": y}


def _scheduler(instance: ModelInstance, **policy) -> Scheduler:
    policy.setdefault("max_batch_size", 8)
    policy.setdefault("dynamic", True)
    return Scheduler("m", BatchingPolicy(**policy), [instance], ModelStats("m", "1"))


def _submit(s: Scheduler, inputs: dict) -> asyncio.Future:
    rows = inputs["ids"].shape[0]
    return s.submit(inputs, ["y"], rows, RequestTiming(time.perf_counter_ns()))


async def test_requests_of_different_lengths_share_one_batch() -> None:
    inst = Packer()
    s = _scheduler(inst, max_queue_delay_us=50_000)
    s.start()
    rng = np.random.default_rng(2)
    requests = [_request(rng, 1, 5), _request(rng, 2, 9, pad=3), _request(rng, 1, 13)]
    results = await asyncio.gather(*(_submit(s, r) for r in requests))
    assert inst.batches == [(4, 5 + 9 + 6 + 13)]  # one batch; the padded row trimmed
    for request, out in zip(requests, results, strict=True):
        keep = request["mask"] == 1
        np.testing.assert_array_equal(out["y"][keep], 2 * request["ids"][keep])
        assert np.all(out["y"][~keep] == SPEC.fill)
    await s.stop()


async def test_the_token_budget_cuts_batches() -> None:
    """64 tokens a batch: requests of 30 tokens go two by two, counted before trimming."""
    inst = Packer()
    inst.gate.clear()
    s = _scheduler(inst, max_queue_delay_us=0)
    s.start()
    rng = np.random.default_rng(3)
    first = _submit(s, _request(rng, 1, 30))
    await asyncio.sleep(0.05)  # the instance holds the first; five more queue up
    rest = [_submit(s, _request(rng, 1, 30, pad=1)) for _ in range(5)]
    inst.gate.set()
    await asyncio.gather(first, *rest)
    assert [rows for rows, _ in inst.batches] == [1, 2, 2, 1]
    await s.stop()


async def test_the_budget_counts_real_tokens_not_padding() -> None:
    """Rows 40 wide with 20 real tokens each: three fit 64 tokens (padded, only one would)."""
    inst = Packer()
    inst.gate.clear()
    s = _scheduler(inst, max_queue_delay_us=0)
    s.start()
    half = {"ids": np.ones((1, 40), np.int64), "mask": (np.arange(40) < 20)[None].astype(int)}
    first = _submit(s, half)
    await asyncio.sleep(0.05)
    rest = [_submit(s, half) for _ in range(6)]
    inst.gate.set()
    await asyncio.gather(first, *rest)
    assert inst.batches == [(1, 20), (3, 60), (3, 60)]
    await s.stop()


async def test_a_mask_with_holes_fails_its_own_request_at_admission() -> None:
    s = _scheduler(Packer(), max_queue_delay_us=0)
    s.start()
    bad = {"ids": np.ones((1, 4), np.int64), "mask": np.array([[0, 1, 1, 1]])}
    with pytest.raises(InvalidInput, match="right-padded"):
        _submit(s, bad)
    good = await _submit(s, {"ids": np.ones((1, 4), np.int64), "mask": np.ones((1, 4), int)})
    assert good["y"].shape == (1, 4)
    await s.stop()


async def test_the_row_limit_cuts_batches() -> None:
    inst = Packer(PackingSpec(max_tokens=1000, max_rows=3, length_input="mask"))
    inst.gate.clear()
    s = _scheduler(inst, max_queue_delay_us=0)
    s.start()
    rng = np.random.default_rng(4)
    first = _submit(s, _request(rng, 1, 4))
    await asyncio.sleep(0.05)
    rest = [_submit(s, _request(rng, 1, 4 + i)) for i in range(5)]
    inst.gate.set()
    await asyncio.gather(first, *rest)
    assert [rows for rows, _ in inst.batches] == [1, 3, 2]
    await s.stop()


async def test_requests_with_different_input_sets_are_not_packed_together() -> None:
    inst = Packer()
    inst.gate.clear()
    s = _scheduler(inst, max_queue_delay_us=0)
    s.start()
    rng = np.random.default_rng(5)
    first = _submit(s, _request(rng, 1, 4))
    await asyncio.sleep(0.05)
    with_mask = [_submit(s, _request(rng, 1, 6)) for _ in range(2)]
    without = [_submit(s, {"ids": np.ones((1, 3), np.int64)}) for _ in range(2)]
    inst.gate.set()
    await asyncio.gather(first, *with_mask, *without)
    assert sorted(inst.batches[1:]) == [(2, 6), (2, 12)]
    await s.stop()


# ---- a request's rows across batches ---------------------------------------------------------
async def _held(inst: Packer, s: Scheduler, first: dict, rest: list[dict]) -> list[dict]:
    """`first` runs while the instance is held; `rest` queue behind it; then all finish."""
    inst.gate.clear()
    s.start()
    head = _submit(s, first)
    await asyncio.sleep(0.05)
    tail = [_submit(s, r) for r in rest]
    inst.gate.set()
    return list(await asyncio.gather(head, *tail))


def _check(request: dict, out: dict) -> None:
    keep = request["mask"] == 1
    assert out["y"].shape == request["ids"].shape
    np.testing.assert_array_equal(out["y"][keep], 2 * request["ids"][keep])
    assert np.all(out["y"][~keep] == SPEC.fill)


async def test_a_request_that_does_not_fit_fills_the_batch_and_finishes_in_the_next() -> None:
    """Budget 64: requests of 5 rows x 10 tokens. Whole requests would leave 14 tokens of
    every batch empty; the next request's first rows fill them, its rest runs after."""
    inst = Packer(PackingSpec(max_tokens=64, max_rows=64, length_input="mask"))
    s = _scheduler(inst, max_batch_size=64, max_queue_delay_us=0)
    rng = np.random.default_rng(11)
    requests = [_request(rng, 5, 10) for _ in range(4)]
    results = await _held(inst, s, _request(rng, 1, 4), requests)
    # 50 + 1 row of the next; its 4 left + 2 of the third; its 3 left + 3 of the last; 2 left
    assert inst.batches == [(1, 4), (6, 60), (6, 60), (6, 60), (2, 20)]
    for request, out in zip(requests, results[1:], strict=True):
        _check(request, out)  # each request's rows back in order, padding filled
    await asyncio.wait_for(s.stop(), 5)  # each request resolved once: the drain ends


async def test_rows_are_split_by_real_tokens_and_the_rest_keeps_its_place() -> None:
    """A 64-token budget, a 40-token request queued, then one of 4 rows x 15 tokens: two of
    its rows fill the first batch (40 + 30 = 70 would not fit; 40 + 15 = 55 does), so one
    goes with the 40 and the other three follow, ahead of the request queued after it."""
    inst = Packer(PackingSpec(max_tokens=64, max_rows=64, length_input="mask"))
    s = _scheduler(inst, max_batch_size=64, max_queue_delay_us=0)
    rng = np.random.default_rng(12)
    forty = _request(rng, 1, 40)
    four = _request(rng, 4, 15)
    last = _request(rng, 1, 9)
    results = await _held(inst, s, _request(rng, 1, 3), [forty, four, last])
    assert inst.batches[1:] == [(2, 55), (4, 54)]
    for request, out in zip([forty, four, last], results[1:], strict=True):
        _check(request, out)
    await s.stop()


async def test_a_small_room_left_is_not_worth_a_split() -> None:
    """Under a sixteenth of the budget left (3 of 64 tokens): the batch goes as it is."""
    inst = Packer(PackingSpec(max_tokens=64, max_rows=64, length_input="mask"))
    s = _scheduler(inst, max_batch_size=64, max_queue_delay_us=0)
    rng = np.random.default_rng(13)
    requests = [_request(rng, 1, 61), _request(rng, 3, 2)]
    await _held(inst, s, _request(rng, 1, 3), requests)
    assert inst.batches[1:] == [(1, 61), (3, 6)]
    await s.stop()


class FailsOn(Packer):
    """Fails every batch that holds the token id `bad`."""

    def __init__(self, bad: int, spec: PackingSpec) -> None:
        super().__init__(spec)
        self.bad = bad

    def launch_packed(
        self, batch: PackedBatch, outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        if np.any(batch.tokens["ids"] == self.bad):
            raise InvalidInput("a bad row")
        return super().launch_packed(batch, outputs)


WIDE = PackingSpec(max_tokens=64, max_rows=64, length_input="mask")


async def test_a_split_request_whose_part_fails_fails_once_and_the_others_finish() -> None:
    inst = FailsOn(bad=5000, spec=WIDE)  # (the requests' ids are 1..999)
    s = _scheduler(inst, max_batch_size=64, max_queue_delay_us=0)
    rng = np.random.default_rng(14)
    forty, bad, after = _request(rng, 1, 40), _request(rng, 4, 15), _request(rng, 1, 9)
    bad["ids"][3, 0] = 5000  # its last row: in the part that runs in the second batch
    inst.gate.clear()
    s.start()
    first = _submit(s, _request(rng, 1, 3))
    await asyncio.sleep(0.05)
    futures = [_submit(s, r) for r in (forty, bad, after)]
    inst.gate.set()
    outcomes = await asyncio.gather(first, *futures, return_exceptions=True)
    assert isinstance(outcomes[2], InvalidInput)  # its first row ran; its result is dropped
    _check(forty, outcomes[1])
    _check(after, outcomes[3])  # failed with the bad part's batch, then run alone
    await asyncio.wait_for(s.stop(), 5)  # every request accounted for once: the drain ends


class Pausing(Packer):
    """Holds its second launch until `resume` is set (`paused` says it got there)."""

    def __init__(self, spec: PackingSpec) -> None:
        super().__init__(spec)
        self.paused = threading.Event()
        self.resume = threading.Event()

    def launch_packed(
        self, batch: PackedBatch, outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        if len(self.batches) == 1:
            self.paused.set()
            self.resume.wait(5)
        return super().launch_packed(batch, outputs)


async def test_a_split_request_whose_client_goes_drops_the_rest() -> None:
    inst = Pausing(WIDE)
    s = _scheduler(inst, max_batch_size=64, max_queue_delay_us=0)
    rng = np.random.default_rng(15)
    inst.gate.clear()
    s.start()
    first = _submit(s, _request(rng, 1, 3))
    await asyncio.sleep(0.05)
    forty = _submit(s, _request(rng, 1, 40))
    four = _submit(s, _request(rng, 4, 15))
    inst.gate.set()
    assert await asyncio.to_thread(inst.paused.wait, 5)
    # The second batch holds the 40 and the first row of `four`; its other rows wait.
    assert s.queue_length() == 1
    assert s.cancel(four)
    inst.resume.set()
    await asyncio.gather(first, forty)
    await asyncio.wait_for(s.stop(), 5)
    assert inst.batches == [(1, 3), (2, 55)]  # the rest never ran
    assert not four.done()  # the engine cancels the future itself (Engine.infer)


async def test_a_request_over_the_token_budget_is_never_launched_from_the_loop() -> None:
    """Rows past the budget run in pieces that the launch waits for: with nothing in flight,
    a request within the budget is launched from the event loop, one over it by the
    instance's thread."""
    threads: list[int] = []

    class AsyncPacker(Packer):
        asynchronous = True

        def launch_packed(self, batch, outputs):
            threads.append(threading.get_ident())
            return super().launch_packed(batch, outputs)

    s = _scheduler(AsyncPacker(), max_queue_delay_us=0)
    s.start()
    rng = np.random.default_rng(4)
    await asyncio.sleep(0.05)
    await _submit(s, _request(rng, 2, 30))  # 60 tokens of a 64-token budget
    await asyncio.sleep(0.05)
    await _submit(s, _request(rng, 3, 30))  # 90 tokens
    assert threads[0] == threading.get_ident() != threads[1]
    await s.stop()
