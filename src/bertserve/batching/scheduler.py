"""The scheduler of one model version: a bounded queue, batch formation, instance workers.

Queue logic runs on the event loop; each instance runs its batches on a thread of its own, so
model compute never blocks the loop and instances run in parallel.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from bertserve.backends.base import ModelInstance
from bertserve.batching.batch import shape_key, split_outputs, stack_inputs
from bertserve.batching.policy import BatchingPolicy
from bertserve.errors import (
    BertserveError,
    InternalError,
    QueueFull,
    RequestTimeout,
    ServerShuttingDown,
)
from bertserve.stats import ModelStats, RequestTiming

__all__ = ["Scheduler", "Pending"]

log = logging.getLogger("bertserve.scheduler")
_now = time.perf_counter_ns


@dataclass(slots=True, eq=False)
class Pending:
    """A request waiting in the queue."""

    inputs: Mapping[str, np.ndarray]
    outputs: list[str]
    batch_size: int  # items this request carries (1 when the model has no batch axis)
    key: tuple
    future: asyncio.Future[dict[str, np.ndarray]]
    timing: RequestTiming
    deadline_ns: int = 0  # 0 = none
    extra: dict = field(default_factory=dict)


class Scheduler:
    def __init__(
        self,
        name: str,
        policy: BatchingPolicy,
        instances: list[ModelInstance],
        stats: ModelStats,
    ) -> None:
        self.name = name
        self.policy = policy
        self.instances = instances
        self.stats = stats
        self._queue: collections.deque[Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-instance{i}")
            for i in range(len(instances))
        ]
        self._stopping = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        preferred = policy.preferred_batch_sizes
        if not preferred and instances and instances[0].batch_buckets:
            # The backend runs some sizes natively (captured graphs): aim for those.
            preferred = tuple(
                b for b in instances[0].batch_buckets if b <= max(policy.max_batch_size, 1)
            )
        self._preferred = frozenset(preferred)
        self._target = max(preferred) if preferred else max(policy.max_batch_size, 1)
        self._delay_ns = policy.max_queue_delay_us * 1000

    # -- admission ---------------------------------------------------------------------------

    def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: list[str],
        batch_size: int,
        timing: RequestTiming,
        timeout_us: int = 0,
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue a request; the future resolves to its outputs. Raises QueueFull at once."""
        if self._stopping:
            raise ServerShuttingDown(
                f"model '{self.name}' is unloading or the server is stopping; retry elsewhere"
            )
        policy = self.policy
        if policy.max_queue_size and len(self._queue) >= policy.max_queue_size:
            raise QueueFull(
                f"model '{self.name}' queue is full ({policy.max_queue_size} requests waiting, "
                "dynamic_batching.default_queue_policy.max_queue_size): retry later, add "
                "instances, or raise max_queue_size"
            )
        if not policy.allow_timeout_override or not timeout_us:
            timeout_us = policy.default_timeout_us
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.append(
            Pending(
                inputs=inputs,
                outputs=outputs,
                batch_size=batch_size,
                key=shape_key(inputs) if policy.dynamic else (),
                future=future,
                timing=timing,
                deadline_ns=timing.arrival + timeout_us * 1000 if timeout_us else 0,
            )
        )
        self._inflight += 1
        self._idle.clear()
        self._arrived.set()
        return future

    def queue_length(self) -> int:
        return len(self._queue)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._worker(instance, executor), name=f"{self.name}-worker{i}")
            for i, (instance, executor) in enumerate(
                zip(self.instances, self._executors, strict=True)
            )
        ]

    async def stop(self, drain: bool = True) -> None:
        """Refuse new requests; finish (drain=True) or fail the queued ones; close instances."""
        self._stopping = True
        if not drain:
            while self._queue:
                pending = self._queue.popleft()
                self._finish_error(pending, ServerShuttingDown("the model was unloaded"))
        self._arrived.set()
        await self._idle.wait()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        loop = asyncio.get_running_loop()
        for instance, executor in zip(self.instances, self._executors, strict=True):
            await loop.run_in_executor(executor, instance.close)
            executor.shutdown(wait=False)

    # -- batch formation ---------------------------------------------------------------------

    async def _worker(self, instance: ModelInstance, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            await self._execute(loop, instance, executor, batch)

    async def _next_batch(self) -> list[Pending]:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            now = _now()
            self._expire(now)
            if not self._queue:
                continue
            if not self.policy.dynamic:
                return [self._queue.popleft()]
            picked, total, full = self._fit()
            oldest = self._queue[0].timing.arrival
            if full or total >= self._target or self._stopping:
                return self._take(self._cut(picked))
            wait_ns = oldest + self._delay_ns - now
            if wait_ns <= 0:
                return self._take(picked)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait_ns / 1e9)

    def _fit(self) -> tuple[list[Pending], int, bool]:
        """Requests, in arrival order, that can share a batch with the oldest one.

        Returns them, their item total, and whether the batch is full (a compatible request
        had to be left out for lack of room)."""
        limit = self.policy.max_batch_size
        first = self._queue[0]
        picked = [first]
        total = first.batch_size
        for pending in list(self._queue)[1:]:
            if pending.key != first.key:
                continue
            if total + pending.batch_size > limit:
                return picked, total, True
            picked.append(pending)
            total += pending.batch_size
        return picked, total, total >= limit

    def _cut(self, picked: list[Pending]) -> list[Pending]:
        """With preferred sizes, stop at the largest prefix whose total is preferred."""
        if not self._preferred:
            return picked
        total, best = 0, 0
        for i, pending in enumerate(picked, 1):
            total += pending.batch_size
            if total in self._preferred:
                best = i
        return picked[:best] if best else picked

    def _take(self, picked: list[Pending]) -> list[Pending]:
        if len(picked) == 1:
            self._queue.popleft()
            return picked
        chosen = set(map(id, picked))
        self._queue = collections.deque(p for p in self._queue if id(p) not in chosen)
        return picked

    def _expire(self, now: int) -> None:
        if not any(p.deadline_ns for p in self._queue):
            return
        kept: collections.deque[Pending] = collections.deque()
        for pending in self._queue:
            if pending.deadline_ns and now >= pending.deadline_ns:
                self._finish_error(
                    pending,
                    RequestTimeout(
                        f"request for model '{self.name}' timed out in the queue after "
                        f"{(now - pending.timing.arrival) // 1000} us"
                    ),
                )
            else:
                kept.append(pending)
        self._queue = kept

    # -- execution ---------------------------------------------------------------------------

    async def _execute(
        self,
        loop: asyncio.AbstractEventLoop,
        instance: ModelInstance,
        executor: ThreadPoolExecutor,
        batch: list[Pending],
    ) -> None:
        dispatch = _now()
        for pending in batch:
            pending.timing.dispatch = dispatch
        try:
            results = await loop.run_in_executor(executor, self._run_batch, instance, batch)
        except BertserveError as exc:
            for pending in batch:
                self._finish_error(pending, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a backend bug must not kill the worker
            log.exception("model '%s' failed on a batch", self.name)
            for pending in batch:
                self._finish_error(pending, InternalError(f"model '{self.name}' failed: {exc}"))
            return
        for pending, outputs in zip(batch, results, strict=True):
            self._inflight -= 1
            if not pending.future.done():
                pending.future.set_result(outputs)
        if not self._inflight:
            self._idle.set()

    def _run_batch(
        self, instance: ModelInstance, batch: list[Pending]
    ) -> list[dict[str, np.ndarray]]:
        """On the instance's thread: stack, run, split, and time each step."""
        t0 = _now()
        stacked = stack_inputs([p.inputs for p in batch])
        wanted = list(dict.fromkeys(name for p in batch for name in p.outputs))
        t1 = _now()
        outputs = instance.run(stacked, wanted)
        t2 = _now()
        if self.policy.max_batch_size > 0:
            parts = split_outputs(outputs, [p.batch_size for p in batch])
        else:
            parts = [outputs]
        results = [
            {name: part[name] for name in p.outputs} for p, part in zip(batch, parts, strict=True)
        ]
        t3 = _now()
        for pending in batch:
            timing = pending.timing
            timing.input_done, timing.infer_done, timing.output_done = t1, t2, t3
        batch_items = sum(p.batch_size for p in batch)
        self.stats.record_execution(batch_items, t1 - t0, t2 - t1, t3 - t2)
        return results

    def _finish_error(self, pending: Pending, error: BertserveError) -> None:
        self._inflight -= 1
        if not pending.future.done():
            pending.future.set_exception(error)
        if not self._inflight:
            self._idle.set()
