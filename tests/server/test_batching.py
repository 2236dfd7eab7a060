"""The scheduler: merging, preferred sizes, splitting, queue policy, timeouts, draining."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest

from bertserve.backends.base import ModelInstance
from bertserve.batching import BatchingPolicy, Scheduler, split_outputs, stack_inputs
from bertserve.errors import QueueFull, RequestTimeout, ServerShuttingDown
from bertserve.stats import ModelStats, RequestTiming


class Doubler(ModelInstance):
    """Returns 2*x, records the batch sizes it ran, can be held to build up a queue."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self.gate.wait(5)
        self.batches.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


def _scheduler(instance: ModelInstance, **policy) -> Scheduler:
    policy.setdefault("max_batch_size", 8)
    policy.setdefault("dynamic", True)
    return Scheduler("m", BatchingPolicy(**policy), [instance], ModelStats("m", "1"))


def _submit(s: Scheduler, value: float, batch: int = 1, timeout_us: int = 0):
    x = np.full((batch, 3), value, np.float32)
    return s.submit({"x": x}, ["y"], batch, RequestTiming(time.perf_counter_ns()), timeout_us)


def test_stack_and_split_are_inverse():
    a, b = np.ones((2, 3)), np.zeros((1, 3))
    stacked = stack_inputs([{"x": a}, {"x": b}])
    assert stacked["x"].shape == (3, 3)
    parts = split_outputs(stacked, [2, 1])
    np.testing.assert_array_equal(parts[0]["x"], a)
    np.testing.assert_array_equal(parts[1]["x"], b)


async def test_concurrent_requests_merge_and_split_exactly():
    inst = Doubler()
    s = _scheduler(inst, max_queue_delay_us=50_000)
    s.start()
    futures = [_submit(s, float(i), batch=1 + i % 2) for i in range(5)]  # 1+2+1+2+1 = 7 items
    results = await asyncio.gather(*futures)
    for i, out in enumerate(results):
        assert out["y"].shape == (1 + i % 2, 3)
        assert np.all(out["y"] == 2 * i)
    assert inst.batches == [7]
    assert s.stats.to_json()["batch_stats"][0]["batch_size"] == 7
    await s.stop()


async def test_preferred_batch_size_cuts_the_batch():
    inst = Doubler()
    inst.gate.clear()
    s = _scheduler(inst, preferred_batch_sizes=(4,), max_queue_delay_us=0)
    s.start()
    first = _submit(s, 0)
    await asyncio.sleep(0.05)  # the instance holds the first request; 6 more queue up
    rest = [_submit(s, 1) for _ in range(6)]
    inst.gate.set()
    await asyncio.gather(first, *rest)
    assert inst.batches == [1, 4, 2]
    await s.stop()


async def test_a_preferred_size_goes_without_waiting_for_the_delay():
    """As tritonserver: a batch of a preferred size that can be formed runs at once, even
    when a larger preferred size would be reached by waiting out the delay."""
    inst = Doubler()
    inst.gate.clear()
    s = _scheduler(inst, max_batch_size=4, preferred_batch_sizes=(2, 4),
                   max_queue_delay_us=10_000_000)  # fmt: skip
    s.start()
    started = time.monotonic()
    held = [_submit(s, 1) for _ in range(2)]  # a batch of 2 starts, held at the gate
    await asyncio.sleep(0.05)
    three = [_submit(s, 1) for _ in range(3)]  # 3 queue: a batch of 2 is due, 1 waits
    inst.gate.set()
    await asyncio.gather(*held, *three[:2])
    assert time.monotonic() - started < 5  # nothing waited out the 10 s delay
    assert inst.batches == [2, 2]
    await s.stop()  # stopping sends the last one at once
    await three[2]
    assert inst.batches == [2, 2, 1]


async def test_full_batch_goes_without_waiting_for_the_delay():
    inst = Doubler()
    s = _scheduler(inst, max_batch_size=4, max_queue_delay_us=10_000_000)
    s.start()
    started = time.monotonic()
    await asyncio.gather(*[_submit(s, 1) for _ in range(4)])
    assert time.monotonic() - started < 5
    assert inst.batches == [4]
    await s.stop()


async def test_without_dynamic_batching_each_request_runs_alone():
    inst = Doubler()
    s = _scheduler(inst, dynamic=False)
    s.start()
    await asyncio.gather(*[_submit(s, 1, batch=2) for _ in range(3)])
    assert inst.batches == [2, 2, 2]
    await s.stop()


async def test_incompatible_shapes_are_not_merged():
    inst = Doubler()
    s = _scheduler(inst, max_queue_delay_us=20_000)
    s.start()
    x3 = s.submit(
        {"x": np.ones((1, 3), np.float32)}, ["y"], 1, RequestTiming(time.perf_counter_ns())
    )
    x5 = s.submit(
        {"x": np.ones((1, 5), np.float32)}, ["y"], 1, RequestTiming(time.perf_counter_ns())
    )
    a, b = await asyncio.gather(x3, x5)
    assert a["y"].shape == (1, 3) and b["y"].shape == (1, 5)
    assert sorted(inst.batches) == [1, 1]
    await s.stop()


async def test_queue_full_is_refused_with_a_named_error():
    inst = Doubler()
    inst.gate.clear()
    s = _scheduler(inst, max_queue_size=2, max_queue_delay_us=0)
    s.start()
    running = _submit(s, 0)
    await asyncio.sleep(0.05)
    queued = [_submit(s, 1), _submit(s, 2)]
    with pytest.raises(QueueFull, match="max_queue_size"):
        _submit(s, 3)
    inst.gate.set()
    await asyncio.gather(running, *queued)  # nothing admitted is lost
    await s.stop()


async def test_request_timeout_in_queue():
    inst = Doubler()
    inst.gate.clear()
    s = _scheduler(inst, max_queue_delay_us=0)
    s.start()
    running = _submit(s, 0)
    await asyncio.sleep(0.05)
    doomed = _submit(s, 1, timeout_us=1000)
    await asyncio.sleep(0.05)
    inst.gate.set()
    await running
    with pytest.raises(RequestTimeout, match="timed out"):
        await doomed
    await s.stop()


async def test_stop_drains_queued_requests_then_refuses_new_ones():
    inst = Doubler()
    inst.gate.clear()
    s = _scheduler(inst, max_queue_delay_us=0)
    s.start()
    futures = [_submit(s, i) for i in range(3)]
    stopping = asyncio.create_task(s.stop())
    await asyncio.sleep(0.05)
    with pytest.raises(ServerShuttingDown):
        _submit(s, 9)
    inst.gate.set()
    await stopping
    assert all(f.done() and not f.exception() for f in futures)


async def test_instances_run_in_parallel():
    held, free = Doubler(), Doubler()
    held.gate.clear()
    s = Scheduler(
        "m", BatchingPolicy(max_batch_size=8, dynamic=False), [held, free], ModelStats("m", "1")
    )
    s.start()
    first = _submit(s, 1)
    await asyncio.sleep(0.05)  # one instance is now busy with `first`
    second = await asyncio.wait_for(_submit(s, 2), 5)  # the other instance serves this one
    assert np.all(second["y"] == 4)
    held.gate.set()
    await first
    assert held.batches == [1] and free.batches == [1]
    await s.stop()


async def test_next_batch_starts_while_the_event_loop_is_busy():
    """Instance threads form their own batches: a front end that keeps the loop busy does not
    hold back the next batch."""
    inst = Doubler()
    inst.gate.clear()
    s = _scheduler(inst, dynamic=False)
    s.start()
    first, second = _submit(s, 1), _submit(s, 2)
    await asyncio.sleep(0.05)  # the instance holds `first`; `second` waits in the queue
    inst.gate.set()
    deadline = time.monotonic() + 5
    while len(inst.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # blocks the event loop, as a busy front end would
    assert inst.batches == [1, 1]
    assert np.all((await second)["y"] == 4) and np.all((await first)["y"] == 2)
    await s.stop()


async def test_stop_closes_every_instance_on_its_thread():
    class Closing(Doubler):
        def __init__(self) -> None:
            super().__init__()
            self.closed_on: str | None = None

        def close(self) -> None:
            self.closed_on = threading.current_thread().name

    a, b = Closing(), Closing()
    s = Scheduler(
        "m", BatchingPolicy(max_batch_size=8, dynamic=False), [a, b], ModelStats("m", "1")
    )
    s.start()
    await _submit(s, 1)
    await s.stop()
    assert a.closed_on == "m-instance0" and b.closed_on == "m-instance1"


class AsyncDoubler(ModelInstance):
    """An asynchronous instance: records launches and waits; the first launch is held."""

    asynchronous = True

    def __init__(self, fail_wait_on: float | None = None) -> None:
        self.events: list[tuple[str, float]] = []
        self.gate = threading.Event()
        self.fail_wait_on = fail_wait_on

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise AssertionError("the scheduler launches asynchronous instances")

    def launch(self, inputs: Mapping[str, np.ndarray], outputs: list[str]):
        value = float(inputs["x"][0, 0])
        if not self.events:
            self.gate.wait(5)
        self.events.append(("launch", value))

        def wait() -> dict[str, np.ndarray]:
            self.events.append(("wait", value))
            if value == self.fail_wait_on:
                raise RuntimeError("device fault")
            return {"y": inputs["x"] * 2}

        return wait


async def test_asynchronous_instance_launches_the_next_batch_before_waiting():
    inst = AsyncDoubler()
    s = _scheduler(inst, dynamic=False)
    s.start()
    futures = [_submit(s, float(v)) for v in range(3)]
    inst.gate.set()
    results = await asyncio.gather(*futures)
    assert [float(r["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0]
    assert inst.events == [
        ("launch", 0), ("launch", 1), ("wait", 0), ("launch", 2), ("wait", 1), ("wait", 2)
    ]  # fmt: skip
    await s.stop()


async def test_a_failed_wait_fails_only_its_batch():
    inst = AsyncDoubler(fail_wait_on=1.0)
    s = _scheduler(inst, dynamic=False)
    s.start()
    futures = [_submit(s, float(v)) for v in range(3)]
    inst.gate.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert float(results[0]["y"][0, 0]) == 0.0 and float(results[2]["y"][0, 0]) == 4.0
    assert "device fault" in str(results[1])
    await s.stop()
