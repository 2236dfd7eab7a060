"""The scheduler's safety net: a batch that fails is run again one request at a time, so that
only the request the model cannot take fails, whether the instance fails as it launches the
batch or as it is waited for (an asynchronous instance, one batch launched ahead)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from bertserve.backends.base import ModelInstance
from bertserve.batching import BatchingPolicy, Scheduler
from bertserve.errors import InternalError
from bertserve.stats import ModelStats, RequestTiming


class Picky(ModelInstance):
    """Doubles x, and fails a whole batch holding a negative value (as a runtime fails a
    batch with one out-of-range index). Held at the gate until released, so that a queue
    builds up (in its launch, or an asynchronous one in its wait: its launch returns at
    once, as the scheduler may launch it from the event loop); `fail_on` picks whether launch
    or the wait fails."""

    def __init__(self, fail_on: str, asynchronous: bool) -> None:
        self.fail_on = fail_on
        self.asynchronous = asynchronous
        self.batches: list[int] = []
        self.gate = threading.Event()

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self.launch(inputs, outputs)()

    def launch(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        if not self.asynchronous:
            self.gate.wait(5)
        x = inputs["x"]
        self.batches.append(len(x))
        if (x < 0).any() and self.fail_on == "launch":
            raise InternalError("index out of range")

        def wait() -> dict[str, np.ndarray]:
            if self.asynchronous:
                self.gate.wait(5)
            if (x < 0).any():
                raise RuntimeError("index out of range")
            return {"y": x * 2}

        return wait


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("fail_on", ["launch", "wait"])
async def test_a_failed_batch_fails_only_its_guilty_request(
    fail_on: str, asynchronous: bool
) -> None:
    instance = Picky(fail_on, asynchronous)
    policy = BatchingPolicy(max_batch_size=8, dynamic=True, max_queue_delay_us=0)
    scheduler = Scheduler("m", policy, [instance], stats := ModelStats("m", "1"))
    scheduler.start()

    def submit(value: float) -> asyncio.Future[dict[str, np.ndarray]]:
        x = np.full((1, 3), value, np.float32)
        return scheduler.submit({"x": x}, ["y"], 1, RequestTiming(time.perf_counter_ns()))

    first = submit(1)
    await asyncio.sleep(0.05)  # the instance holds `first`; the next five queue up
    rest = [submit(v) for v in (2, 3, -1, 4, 5)]
    instance.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert [r["y"][0, 0] for r in results if isinstance(r, dict)] == [2, 4, 6, 8, 10]
    (failed,) = [r for r in results if isinstance(r, Exception)]
    assert isinstance(failed, InternalError) and "index out of range" in str(failed)
    assert instance.batches == [1, 5, 1, 1, 1, 1, 1]  # the five together, then one by one
    assert stats.execution_count == 5  # what succeeded: `first` and the four run alone
    await scheduler.stop()


async def test_a_request_that_fails_alone_is_not_run_again() -> None:
    instance = Picky("launch", asynchronous=False)
    instance.gate.set()
    policy = BatchingPolicy(max_batch_size=8, dynamic=True, max_queue_delay_us=0)
    scheduler = Scheduler("m", policy, [instance], ModelStats("m", "1"))
    scheduler.start()
    x = np.full((1, 3), -1, np.float32)
    with pytest.raises(InternalError):
        await scheduler.submit({"x": x}, ["y"], 1, RequestTiming(time.perf_counter_ns()))
    assert instance.batches == [1]
    await scheduler.stop()
