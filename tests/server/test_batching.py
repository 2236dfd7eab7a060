"""The scheduler: merging, preferred sizes, splitting, queue policy, timeouts, draining."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest

from bertserve.backends.base import InFlight, ModelInstance
from bertserve.batching import BatchingPolicy, Scheduler, split_outputs, stack_inputs
from bertserve.batching import scheduler as scheduler_module
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


async def _started(inst: ModelInstance, **policy: object) -> tuple[Scheduler, int]:
    """A scheduler over `inst` (`_scheduler`'s policy), started, its instance thread parked;
    and the thread of the loop (the one running the test)."""
    s = _scheduler(inst, **policy)
    s.start()
    await asyncio.sleep(0.05)  # the instance thread parks
    return s, threading.get_ident()


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
    """An asynchronous instance: records launches and waits, and the threads they ran on; the
    first wait is held at the gate (a launch returns at once: the scheduler may launch from
    the event loop)."""

    asynchronous = True

    def __init__(self, fail_wait_on: float | None = None) -> None:
        self.events: list[tuple[str, float]] = []
        self.threads: list[tuple[str, float, int]] = []
        self.gate = threading.Event()
        self.fail_wait_on = fail_wait_on

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise AssertionError("the scheduler launches asynchronous instances")

    def launch(self, inputs: Mapping[str, np.ndarray], outputs: list[str]):
        value = float(inputs["x"][0, 0])
        first = not self.events
        self.events.append(("launch", value))
        self.threads.append(("launch", value, threading.get_ident()))

        def wait() -> dict[str, np.ndarray]:
            if first:
                self.gate.wait(5)
            self.events.append(("wait", value))
            self.threads.append(("wait", value, threading.get_ident()))
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


async def test_an_idle_asynchronous_instance_is_launched_from_the_loop():
    """A request that finds an asynchronous instance idle is launched by the event loop at
    once (no wait for the instance thread to wake); the thread waits for it. A request that
    comes while the instance is busy is launched by the instance thread, as before."""
    inst = AsyncDoubler()
    s, loop_thread = await _started(inst, dynamic=False)
    first = _submit(s, 1.0)
    assert inst.events == [("launch", 1.0)]  # launched inside submit, before any await
    await asyncio.sleep(0.05)  # the instance thread now waits for it, held at the gate
    second = _submit(s, 2.0)  # the instance is busy: this one queues
    await asyncio.sleep(0.05)
    inst.gate.set()
    assert [float(r["y"][0, 0]) for r in await asyncio.gather(first, second)] == [2.0, 4.0]
    by = {(kind, value): ident for kind, value, ident in inst.threads}
    instance_thread = by[("wait", 1.0)]
    assert by[("launch", 1.0)] == loop_thread != instance_thread
    assert by[("launch", 2.0)] == by[("wait", 2.0)] == instance_thread
    await asyncio.sleep(0.05)  # the instance thread parks again
    third = await _submit(s, 3.0)  # idle again: from the loop again
    assert float(third["y"][0, 0]) == 6.0
    assert inst.threads[-2] == ("launch", 3.0, loop_thread)
    assert inst.threads[-1] == ("wait", 3.0, instance_thread)
    await s.stop()


async def test_a_synchronous_instance_never_computes_on_the_loop():
    """A synchronous instance computes in its launch: the loop never runs it, idle or not."""
    threads: list[int] = []

    class Recording(Doubler):
        def run(self, inputs, outputs):
            threads.append(threading.get_ident())
            return super().run(inputs, outputs)

    s = _scheduler(Recording(), dynamic=False)
    s.start()
    await asyncio.sleep(0.05)
    for v in range(3):
        await _submit(s, float(v))
    assert len(threads) == 3 and threading.get_ident() not in threads
    await s.stop()


async def test_a_launch_from_the_loop_that_fails_fails_its_request_and_the_instance_serves_on():
    class Faulty(AsyncDoubler):
        def launch(self, inputs, outputs):
            if float(inputs["x"][0, 0]) < 0:
                raise RuntimeError("no such index")
            return super().launch(inputs, outputs)

    inst = Faulty()
    inst.gate.set()
    s = _scheduler(inst, dynamic=False)
    s.start()
    await asyncio.sleep(0.05)
    with pytest.raises(Exception, match="no such index"):
        await _submit(s, -1.0)
    for v in (1.0, 2.0):
        assert float((await _submit(s, v))["y"][0, 0]) == 2 * v
    await s.stop()


async def test_past_light_load_the_instance_threads_launch_so_batches_can_grow():
    """Under light load (fewer requests in flight than instances) each arrival is launched
    from the loop on an idle instance. From as many as there are instances on, a new one is
    not: an instance's thread takes it, with whatever else queued meanwhile (launching each
    request on arrival would make batches of one)."""
    a, b = AsyncDoubler(), AsyncDoubler()  # each holds its first wait at its gate
    s = Scheduler("m", BatchingPolicy(max_batch_size=8, dynamic=True), [a, b],
                  ModelStats("m", "1"))  # fmt: skip
    s.start()
    loop_thread = threading.get_ident()
    await asyncio.sleep(0.05)
    first = _submit(s, 1.0)  # nothing in flight: from the loop
    second = _submit(s, 2.0)  # one in flight, two instances: from the loop, on the other
    rest = [_submit(s, 3.0), _submit(s, 4.0)]  # both instances busy: queued
    await asyncio.sleep(0.05)  # two rows of eight: not launched ahead of the held passes
    assert {e for e in a.events + b.events if e[0] == "launch"} == {
        ("launch", 1.0),
        ("launch", 2.0),
    }
    a.gate.set()
    b.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, second, *rest), 5)
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0, 8.0]
    launches = {v: ident for kind, v, ident in a.threads + b.threads if kind == "launch"}
    assert launches[1.0] == launches[2.0] == loop_thread != launches[3.0]
    assert 4.0 not in launches  # in 3.0's batch
    assert {("launch", 1.0), ("launch", 2.0)} <= {a.events[0], b.events[0]}
    await s.stop()


async def test_a_busy_instance_launches_ahead_only_half_a_batch_or_more():
    """With a pass of its own on the device, an instance launches the next batch ahead of
    waiting for it only when that batch holds half the model's batch or more; a smaller one
    waits for the pass and goes with whatever queued meanwhile. (Under load, small batches
    launched ahead kept every batch small: pk16 `-b4` c256 on an H200 ran batches of 32-57
    rows; held back, 57-104, and a median 17% more requests a second, docs/gpu-notes.md
    round 7.)"""
    inst = AsyncDoubler()  # holds its first wait at its gate
    s, _ = await _started(inst)  # dynamic, eight rows, no delay
    first = _submit(s, 0.0)  # launched by the loop, handed to the thread to wait for
    small = [_submit(s, float(v)) for v in (1, 2, 3)]  # queued: three rows, under half
    await asyncio.sleep(0.05)  # the thread has looked at the queue and waits for its pass
    assert inst.events == [("launch", 0.0)]
    inst.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *small), 5)
    assert [float(r["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert inst.events == [("launch", 0.0), ("wait", 0.0), ("launch", 1.0), ("wait", 1.0)]
    await s.stop()

    inst = AsyncDoubler()
    s, _ = await _started(inst)
    first = _submit(s, 0.0)
    half = _submit(s, 1.0, batch=4)  # queued: four rows of eight, launched ahead
    for _ in range(200):
        if len(inst.events) > 1:
            break
        await asyncio.sleep(0.005)
    assert inst.events == [("launch", 0.0), ("launch", 1.0)]
    inst.gate.set()
    await asyncio.wait_for(asyncio.gather(first, half), 5)
    await s.stop()


@pytest.mark.parametrize("tells", [False, True], ids=["plain", "in-flight"])
async def test_bursts_and_lulls_leave_no_request_behind(tells: bool):
    """Waves of requests with lulls between them, on three asynchronous instances whose
    device takes a random while: the scheduler goes from idle (the loop launches) to loaded
    (the threads launch) and back many times; every request comes back, right, and none
    waits on a wake that never comes (each wave must finish on its own, nothing after it).
    With `tells`, the passes say when they are done: the loop watches its own launches and
    parks their instance again, or hands them over when a request queues."""
    rng = np.random.default_rng(7)

    class Jittery(ModelInstance):
        asynchronous = True

        def __init__(self, seed: int) -> None:
            self.rng = np.random.default_rng(seed)
            self.lock = threading.Lock()

        def run(self, inputs, outputs):
            raise AssertionError("the scheduler launches asynchronous instances")

        def launch(self, inputs, outputs):
            with self.lock:
                pause = float(self.rng.uniform(0, 0.002))
            x = inputs["x"]
            due = time.perf_counter() + pause

            def wait():
                time.sleep(max(0.0, due - time.perf_counter()))
                return {"y": x * 2}

            return InFlight(wait, lambda: time.perf_counter() >= due) if tells else wait

    s = Scheduler("m", BatchingPolicy(max_batch_size=8, dynamic=True),
                  [Jittery(i) for i in range(3)], ModelStats("m", "1"))  # fmt: skip
    s.start()
    value = 0
    for _ in range(60):
        wave = []
        for _ in range(int(rng.integers(1, 24))):
            value += 1
            wave.append((value, _submit(s, float(value), batch=int(rng.integers(1, 4)))))
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*(f for _, f in wave)), 5)
        for (v, _), out in zip(wave, results, strict=True):
            assert np.all(out["y"] == 2 * v)
        await asyncio.sleep(float(rng.uniform(0, 0.004)))
    await s.stop()


async def test_a_request_one_pass_cannot_hold_is_launched_by_its_thread():
    """A request over the instance's largest native size would be run in pieces, each waited
    for inside the launch: never on the loop, even with nothing in flight."""
    inst = AsyncDoubler()
    inst.gate.set()
    inst.batch_buckets = (1, 4)
    s, loop_thread = await _started(inst, dynamic=False)
    await _submit(s, 1.0, batch=4)  # one pass holds it: from the loop
    await asyncio.sleep(0.05)
    await _submit(s, 2.0, batch=6)  # two pieces: from the instance thread
    launches = {v: ident for kind, v, ident in inst.threads if kind == "launch"}
    assert launches[1.0] == loop_thread and launches[2.0] != loop_thread
    await s.stop()


@pytest.fixture()
def unbounded_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop watches a pass for as long as it takes, however long an iteration: a busy
    test machine's pauses must not hand a pass to its thread (the tests of those bounds set
    them themselves)."""
    monkeypatch.setattr(scheduler_module, "WATCH_NS", 10**10)
    monkeypatch.setattr(scheduler_module, "BUSY_NS", 10**10)


class Watched(AsyncDoubler):
    """An asynchronous instance whose passes tell when they are done (InFlight): a pass is
    done once the gate is open; ready() is counted, and fails for `fail_ready_on`."""

    def __init__(self, fail_wait_on: float | None = None, fail_ready_on: float | None = None):
        super().__init__(fail_wait_on)
        self.fail_ready_on = fail_ready_on
        self.polls = 0

    def launch(self, inputs: Mapping[str, np.ndarray], outputs: list[str]):
        wait = super().launch(inputs, outputs)
        value = float(inputs["x"][0, 0])

        def ready() -> bool:
            self.polls += 1
            if value == self.fail_ready_on:
                raise RuntimeError("event query failed")
            return self.gate.is_set()

        return InFlight(wait, ready)


async def _answered_after_a_thread_waited(
    inst: AsyncDoubler, held: asyncio.Future, loop_thread: int
) -> None:
    """Open the gate: the held request (1.0) is answered, its pass waited for on the
    instance's thread, not on the loop."""
    inst.gate.set()
    assert float((await held)["y"][0, 0]) == 2.0
    waits = [ident for kind, _, ident in inst.threads if kind == "wait"]
    assert waits and waits[0] != loop_thread


@pytest.mark.usefixtures("unbounded_watch")
async def test_the_loop_finishes_a_pass_it_launched_without_waking_a_thread():
    """A lone request on an idle instance whose pass tells when it is done: the loop launches
    it, polls it between its other callbacks (the loop keeps running meanwhile), waits for
    it and resolves it itself; the instance thread is parked again, never woken, so the next
    lone request goes the same way."""
    inst = Watched()
    s, loop_thread = await _started(inst, dynamic=False)
    first = _submit(s, 1.0)
    ticks = 0
    while inst.polls < 4:  # the loop runs other work while it watches (a poll in submit)
        ticks += 1
        await asyncio.sleep(0)
    assert ticks == 3 and not first.done()
    inst.gate.set()
    assert float((await first)["y"][0, 0]) == 2.0
    second = await _submit(s, 2.0)
    assert float(second["y"][0, 0]) == 4.0
    assert inst.threads == [
        ("launch", 1.0, loop_thread), ("wait", 1.0, loop_thread),
        ("launch", 2.0, loop_thread), ("wait", 2.0, loop_thread),
    ]  # fmt: skip
    assert len(s._parked) == 1  # the worker, parked again
    assert s.stats.to_json()["execution_count"] == 2
    await s.stop()


@pytest.mark.usefixtures("unbounded_watch")
async def test_a_request_that_queues_while_the_loop_watches_takes_the_pass_to_the_thread():
    """A second request while the loop watches the first: the instance thread is handed the
    watched pass and launches the second before it waits for the first, as under load."""
    inst = Watched()
    s, loop_thread = await _started(inst, dynamic=False)
    first = _submit(s, 1.0)
    await asyncio.sleep(0.01)
    second = _submit(s, 2.0)
    for _ in range(200):  # the thread launches the second while the first is still held
        if ("launch", 2.0) in inst.events:
            break
        await asyncio.sleep(0.005)
    assert not first.done()
    inst.gate.set()
    results = await asyncio.gather(first, second)
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0]
    by = {(kind, value): ident for kind, value, ident in inst.threads}
    assert by[("launch", 1.0)] == loop_thread
    assert loop_thread != by[("launch", 2.0)] == by[("wait", 1.0)] == by[("wait", 2.0)]
    assert inst.events == [("launch", 1.0), ("launch", 2.0), ("wait", 1.0), ("wait", 2.0)]
    await s.stop()


@pytest.mark.usefixtures("unbounded_watch")
async def test_a_request_that_queues_as_the_watched_pass_ends_wakes_the_thread():
    """The watched pass is done by the poll after a second request queued: the loop finishes
    the first and parks its instance thread again, which must then take the second."""
    inst = Watched()
    s, loop_thread = await _started(inst, dynamic=False)
    first = _submit(s, 1.0)
    inst.gate.set()
    second = _submit(s, 2.0)  # queued before the loop polls again
    results = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0]
    by = {(kind, value): ident for kind, value, ident in inst.threads}
    assert by[("wait", 1.0)] == loop_thread != by[("launch", 2.0)]
    await s.stop()


async def test_a_busy_loop_hands_the_watched_pass_to_the_thread(monkeypatch):
    """Another callback holds the loop for longer than BUSY_NS between two looks at the
    watched pass (the loop reading other requests): the pass goes to the instance's thread,
    which waits for it there."""
    monkeypatch.setattr(scheduler_module, "WATCH_NS", 10**10)
    monkeypatch.setattr(scheduler_module, "BUSY_NS", 20_000_000)
    inst = Watched()
    s, loop_thread = await _started(inst, dynamic=False)
    held = _submit(s, 1.0)
    for _ in range(5):  # short iterations: still watched by the loop
        await asyncio.sleep(0)
    polls = inst.polls
    assert polls >= 3
    time.sleep(0.05)  # this callback holds the loop for 50 ms
    await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    assert inst.polls == polls + 1  # one look after the busy stretch, then handed over
    await _answered_after_a_thread_waited(inst, held, loop_thread)
    await s.stop()


async def test_a_pass_longer_than_the_watch_goes_to_the_thread(monkeypatch):
    monkeypatch.setattr(scheduler_module, "WATCH_NS", 2_000_000)
    inst = Watched()
    s, loop_thread = await _started(inst, dynamic=False)
    held = _submit(s, 1.0)
    await asyncio.sleep(0.05)  # past the watch: the loop stopped polling
    polls = inst.polls
    await asyncio.sleep(0.02)
    assert inst.polls == polls > 0 and not held.done()
    await _answered_after_a_thread_waited(inst, held, loop_thread)
    await s.stop()


@pytest.mark.usefixtures("unbounded_watch")
@pytest.mark.parametrize("fault", ["wait", "ready"])
async def test_a_watched_pass_that_fails_fails_its_request_and_the_model_serves_on(fault):
    """A device fault shows in the pass's wait, and may show first in its ready() (an event
    query): either way the request fails with it, on the loop, and nothing else does."""
    inst = Watched(fail_wait_on=-1.0, fail_ready_on=-1.0 if fault == "ready" else None)
    inst.gate.set()
    s, loop_thread = await _started(inst, dynamic=False)
    with pytest.raises(Exception, match="device fault"):
        await _submit(s, -1.0)
    assert inst.polls == 1
    for v in (1.0, 2.0):
        assert float((await _submit(s, v))["y"][0, 0]) == 2 * v
    assert [i for k, v, i in inst.threads if v > 0] == [loop_thread] * 4
    await s.stop()


@pytest.mark.parametrize("kind", [AsyncDoubler, Watched], ids=["handed-over", "watched"])
async def test_stop_drains_a_batch_the_loop_launched(kind: type[AsyncDoubler]) -> None:
    """Launched from the loop, then handed to the thread or watched (and past WATCH_NS
    handed over): stop waits for it either way."""
    inst = kind()
    s = _scheduler(inst, dynamic=False)
    s.start()
    await asyncio.sleep(0.05)
    held = _submit(s, 5.0)  # launched from the loop; its wait is held at the gate
    stopping = asyncio.ensure_future(s.stop(drain=True))
    await asyncio.sleep(0.05)
    assert not stopping.done() and not held.done()
    inst.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert float(held.result()["y"][0, 0]) == 10.0


@pytest.mark.usefixtures("unbounded_watch")
async def test_under_light_load_each_request_is_launched_and_watched_by_the_loop():
    """Two instances, two requests in flight at a time (as a client at concurrency 2): each
    arrival finds an instance idle and is launched and watched by the loop, none by a
    thread, and each comes back right."""
    a, b = Watched(), Watched()
    s = Scheduler("m", BatchingPolicy(max_batch_size=8, dynamic=True), [a, b],
                  ModelStats("m", "1"))  # fmt: skip
    s.start()
    loop_thread = threading.get_ident()
    await asyncio.sleep(0.05)
    pending = {_submit(s, 1.0): 1.0}
    for value in range(2, 12):
        pending[_submit(s, float(value))] = float(value)  # the second in flight
        done, _ = await asyncio.wait(list(pending), timeout=0.01)
        assert not done  # both held: each on an instance of its own, watched
        gate = a.gate if a.events[-1][1] == min(pending.values()) else b.gate
        gate.set()  # the older one's device finishes
        (finished,), _ = await asyncio.wait(list(pending), return_when="FIRST_COMPLETED")
        assert float(finished.result()["y"][0, 0]) == 2 * pending.pop(finished)
        gate.clear()
    a.gate.set()
    b.gate.set()
    for future, value in pending.items():
        assert float((await future)["y"][0, 0]) == 2 * value
    assert {ident for _, _, ident in a.threads + b.threads} == {loop_thread}
    await s.stop()


async def test_the_loop_never_launches_what_queued_before_a_request():
    """Light load, but an older request waits in the queue (its delay not up): a new one that
    makes the batch due is not launched from the loop, whose batch would be both requests,
    more than one pass holds (its launch would wait for its first piece on the loop)."""
    a, b = AsyncDoubler(), AsyncDoubler()
    for inst in (a, b):
        inst.gate.set()
        inst.batch_buckets = (1, 4)
    s = Scheduler("m", BatchingPolicy(max_batch_size=8, dynamic=True,
                                      max_queue_delay_us=200_000),
                  [a, b], ModelStats("m", "1"))  # fmt: skip
    s.start()
    loop_thread = threading.get_ident()
    await asyncio.sleep(0.05)
    older = _submit(s, 1.0, batch=3)  # not due for 200 ms: queued
    await asyncio.sleep(0.01)
    newer = _submit(s, 2.0, batch=3)  # 6 rows: due (over the aim of 4), two pieces
    await asyncio.wait_for(asyncio.gather(older, newer), 5)
    launches = [ident for kind, _, ident in a.threads + b.threads if kind == "launch"]
    assert launches and loop_thread not in launches
    await s.stop()


async def test_a_flush_request_is_not_held_for_the_queue_delay() -> None:
    """A pipeline's call (flush) goes at once, taking what is queued with it; a request
    queued before it that it cannot share a batch with goes first, at once too; a plain
    request alone is still held for the delay."""
    inst = Doubler()
    s, _ = await _started(inst, max_queue_delay_us=10_000_000)
    try:
        plain = _submit(s, 1.0)
        await asyncio.sleep(0.2)
        assert not plain.done()  # held: its delay is 10 s
        flushed = s.submit(
            {"x": np.full((1, 3), 2.0, np.float32)}, ["y"], 1,
            RequestTiming(time.perf_counter_ns()), flush=True,
        )  # fmt: skip
        results = await asyncio.wait_for(asyncio.gather(plain, flushed), 2)
        assert [r["y"][0, 0] for r in results] == [2.0, 4.0]
        assert inst.batches == [2]  # one batch: the flush took the plain request along
        # a head of another shape (it cannot join the flush request's batch) goes first
        other = s.submit(
            {"x": np.full((1, 5), 3.0, np.float32)}, ["y"], 1,
            RequestTiming(time.perf_counter_ns()),
        )  # fmt: skip
        await asyncio.sleep(0.05)
        flushed = s.submit(
            {"x": np.full((1, 3), 4.0, np.float32)}, ["y"], 1,
            RequestTiming(time.perf_counter_ns()), flush=True,
        )  # fmt: skip
        await asyncio.wait_for(asyncio.gather(other, flushed), 2)
        assert inst.batches == [2, 1, 1]
    finally:
        await s.stop()
