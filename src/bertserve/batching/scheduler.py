"""The scheduler of one model version: a bounded queue, batch formation, instance workers.

Requests are admitted on the event loop; each instance has a thread of its own that forms its
batches from the shared queue, runs them and hands results back to the loop, so model compute
never blocks the loop, instances run in parallel, and no batch waits for the loop to start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from bertserve.backends.base import InFlight, ModelInstance
from bertserve.backends.packing import PackedBatch, pack, row_lengths, unpack
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
#: One line per executed batch at INFO (`serve --log-verbose 1`).
batch_log = logging.getLogger("bertserve.batches")
_now = time.perf_counter_ns

#: How long the event loop watches a pass it launched on an idle instance before handing it
#: to the instance's thread (ns): a batch-1 BERT-base pass takes ~0.5 ms on an H200.
WATCH_NS = 2_000_000
#: A loop iteration longer than this (ns) between two looks at a watched pass means the loop
#: has other requests to read: the pass goes to its thread, so that watching and finishing it
#: take nothing from them (one request's arrival takes ~0.1-0.2 ms of the loop; a loaded
#: loop's iteration reads many).
BUSY_NS = 250_000


def _call(callback: Callable[..., None], *args: object) -> None:
    callback(*args)


@dataclass(slots=True, eq=False)
class Pending:
    """A request waiting in the queue."""

    inputs: Mapping[str, np.ndarray]
    outputs: list[str]
    batch_size: int  # items this request carries (1 when the model has no batch axis)
    cost: int  # what it takes of a batch's budget: items, or tokens on a model that packs
    key: tuple[object, ...]  # requests share a batch only when equal: shape_key, or the
    # input names on a model that packs (any widths go together)
    future: asyncio.Future[dict[str, np.ndarray]]
    timing: RequestTiming
    deadline_ns: int = 0  # 0 = none
    lengths: np.ndarray | None = None  # packing: each row's real tokens (None: all full)
    #: Runs in a batch of its own: a batch it was in failed (see Scheduler._retry_alone).
    alone: bool = False
    #: Packing: the request's rows run in more than one batch (Scheduler._split); this part
    #: starts at row `offset` of the request.
    joined: _Joined | None = None
    offset: int = 0
    #: Not held for the queue delay (a pipeline's call: nothing more of its batch is coming);
    #: while one waits, the batch at the head of the queue is due.
    flush: bool = False


@dataclass(slots=True, eq=False)
class _Joined:
    """A request whose rows run in more than one batch: the outputs of each part, by the row
    it starts at, until all `rows` are back (then the request resolves once, in row order);
    `finished` once it resolved, failed or was cancelled (later parts are dropped)."""

    rows: int
    parts: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    done: int = 0
    finished: bool = False

    def add(self, part: Pending, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Take a part's outputs; the whole request's once every row is back, else None."""
        self.parts[part.offset] = outputs
        self.done += part.batch_size
        if self.done < self.rows:
            return None
        self.finished = True
        order = sorted(self.parts)
        return {name: np.concatenate([self.parts[o][name] for o in order]) for name in outputs}


@dataclass(slots=True, eq=False)
class _Worker:
    """One instance thread's place in the scheduler: its own condition on the scheduler's
    lock (so a wake reaches the thread meant), and the batch the event loop launched on its
    instance while it was idle (Scheduler._launch_idle)."""

    instance: ModelInstance
    cond: threading.Condition
    claimed: bool = False  # the loop is launching a batch on this thread's instance
    handed: _Launched | None = None  # that batch, for this thread to wait for


@dataclass(slots=True, eq=False)
class _Launched:
    """A batch an instance has started: wait() returns its outputs."""

    batch: list[Pending]
    wait: Callable[[], dict[str, np.ndarray]]
    started: int
    input_done: int
    packed: PackedBatch | None = None


class Scheduler:
    """Admission runs on the event loop; everything after it runs on one thread per instance.

    Each instance thread forms its own next batch from the shared queue the moment it is free
    (no round trip through the event loop between batches), runs it, and hands the results
    back to the loop in one call per batch. The loop only admits requests and resolves
    futures, so a busy front end no longer delays the next batch.

    One exception, for latency: under light load (fewer requests in flight than instances,
    none waiting), a request for asynchronous instances (a GPU's) is launched by the loop
    itself on an idle instance, at once, so the device starts without waiting for a thread to
    wake and take the GIL (batch-1 p50 through HTTP 1.36-1.45 -> 1.21 ms on an H200). Only
    then: under load a woken thread takes what queued while it woke, and launching each
    request on arrival instead made batches of one (-20% at batch 4, concurrency 256). A pass
    that tells when it is done (InFlight, a GPU's) is then watched by the loop itself until
    another request queues (-> 0.93-1.04 ms), and any other is handed to the instance's
    thread to wait for; two clients on two instances each get one (concurrency 2: p50
    1.38-1.98 -> 1.23-1.42 ms in six rounds of seven)."""

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
        self._lock = threading.Lock()
        self._workers = [_Worker(i, threading.Condition(self._lock)) for i in instances]
        #: Workers parked with nothing in flight, in the order they parked (under the lock);
        #: the one parked longest is woken first, as a Condition's first waiter is.
        self._parked: list[_Worker] = []
        #: Due batches go straight onto an idle instance from the loop: only instances whose
        #: launch returns at once (a synchronous one would compute on the loop).
        self._launch_on_loop = bool(instances) and all(i.asynchronous for i in instances)
        #: The rows one pass of an instance holds without a padding model: its largest native
        #: size (past it, launch runs the pieces one after another, waiting for each).
        buckets = instances[0].batch_buckets if instances else None
        self._one_pass_rows = max(buckets) if buckets else max(policy.max_batch_size, 1)
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False  # refuse new requests; batches stop waiting for the delay
        self._exit = False  # queue drained: instance threads close their instance and end
        self._inflight = 0  # loop-only
        self._idle = asyncio.Event()
        self._idle.set()
        preferred = policy.preferred_batch_sizes
        if not preferred and instances and instances[0].batch_buckets:
            # The backend runs some sizes natively (captured graphs): aim for those.
            preferred = tuple(
                b for b in instances[0].batch_buckets if b <= max(policy.max_batch_size, 1)
            )
        self._preferred = frozenset(preferred)
        #: The sizes the config names: as in tritonserver, a batch of one of them is sent as
        #: soon as it can be formed, without waiting out the queue delay for a larger one (a
        #: backend's native sizes only steer the cut).
        self._send_at = frozenset(policy.preferred_batch_sizes)
        self._target = max(preferred) if preferred else max(policy.max_batch_size, 1)
        self._max_rows = self._max_cost = max(policy.max_batch_size, 1)
        # A model that packs variable-length rows: batches by a token budget, requests of
        # any width together, no preferred sizes (every token count is native).
        self._packing = instances[0].packing if instances else None
        if self._packing is not None:
            self._preferred = self._send_at = frozenset()
            self._max_rows = min(self._max_rows, self._packing.max_rows)
            self._max_cost = self._target = self._packing.max_tokens
        self._delay_ns = policy.max_queue_delay_us * 1000
        self._flushed = False  # a flush request was ever queued (else none is looked for)

    # -- admission (event loop) --------------------------------------------------------------

    def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: list[str],
        batch_size: int,
        timing: RequestTiming,
        timeout_us: int = 0,
        flush: bool = False,
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue a request; the future resolves to its outputs. Raises QueueFull at once.
        `flush`: the request is not held for the queue delay, nor is anything queued before
        it (a pipeline's call, `Engine.infer`)."""
        if self._stopping:
            raise ServerShuttingDown(
                f"model '{self.name}' is unloading or the server is stopping; retry elsewhere"
            )
        policy = self.policy
        if not policy.allow_timeout_override or not timeout_us:
            timeout_us = policy.default_timeout_us
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        lengths = None
        key: tuple[object, ...]
        if self._packing is None:
            cost, key = batch_size, shape_key(inputs) if policy.dynamic else ()
        else:  # the real tokens: padding past a row's mask takes no room in the batch
            lengths = row_lengths(inputs, self._packing)
            cost = int(lengths.sum()) if lengths is not None else next(iter(inputs.values())).size
            key = tuple(inputs) if policy.dynamic else ()
        pending = Pending(
            inputs=inputs,
            outputs=outputs,
            batch_size=batch_size,
            cost=cost,
            key=key,
            lengths=lengths,
            future=future,
            timing=timing,
            deadline_ns=timing.arrival + timeout_us * 1000 if timeout_us else 0,
            flush=flush,
        )
        self._flushed = self._flushed or flush
        with self._lock:
            self.check_room()
            self._queue.append(pending)
            light = self._inflight < len(self._workers) and len(self._queue) == 1
            claimed = self._claim_idle(pending) if light else None
            if claimed is None:
                self._wake_one()
        self._inflight += 1
        self._idle.clear()
        if claimed is not None:
            self._launch_idle(*claimed)
        return future

    def _claim_idle(self, pending: Pending) -> tuple[_Worker, list[Pending]] | None:
        """Under the lock, under light load (fewer requests in flight than instances, and
        `pending` all the queue holds): a parked worker and the batch now due, taken from the
        queue for the loop to launch (_launch_idle), or None (no worker parked, nothing due,
        instances that compute in their launch, or a request one pass does not hold, whose
        launch would wait for its first pieces on the loop)."""
        if not self._launch_on_loop or not self._parked or not self._one_pass(pending):
            return None
        batch = self._due(_now())
        if batch is None:
            return None
        worker = self._parked.pop(0)
        worker.claimed = True
        return worker, batch

    def _one_pass(self, pending: Pending) -> bool:
        if self._packing is not None:
            return pending.batch_size <= self._max_rows and pending.cost <= self._max_cost
        return pending.batch_size <= self._one_pass_rows

    def _launch_idle(self, worker: _Worker, batch: list[Pending]) -> None:
        """Launch `batch` on the idle `worker`'s instance from the loop. A pass that tells when
        it is done (InFlight) is watched from the loop (_watch); any other is handed over:
        the worker waits for it as for a batch of its own. A launch that fails has failed its
        requests (or queued them to run alone) already; the worker goes back to the queue."""
        launched = self._launch(worker.instance, batch)
        if launched is not None and isinstance(launched.wait, InFlight):
            now = _now()
            self._watch(worker, launched, launched.started + WATCH_NS, now)
            return
        self._hand_over(worker, launched)

    def _hand_over(self, worker: _Worker, launched: _Launched | None) -> None:
        with self._lock:
            worker.claimed = False
            worker.handed = launched
            worker.cond.notify()

    def _watch(self, worker: _Worker, launched: _Launched, until: int, last: int) -> None:
        """On the loop: finish a pass the loop launched once it is done, polling it once a
        loop iteration (other callbacks and I/O run between polls), so that a lone request
        comes back without two thread wakes (the worker's, then the loop's: batch-1 p50
        over HTTP on an H200 1.13-1.27 -> 0.93-1.04 ms). The claimed worker is handed the
        pass instead when another request queues (it launches that one before it waits, as
        under load), when the loop is busy (an iteration since the last look took over
        BUSY_NS: requests are being read, whose time the watch would take), or after
        WATCH_NS (a long pass should not keep the loop spinning)."""
        assert isinstance(launched.wait, InFlight) and self._loop is not None
        try:
            done = launched.wait.ready()
        except Exception:  # noqa: BLE001 - waiting raises it again, and fails the batch
            done = True
        if not done:
            now = _now()
            if not self._queue and now < until and now - last < BUSY_NS:
                self._loop.call_soon(self._watch, worker, launched, until, now)
            else:
                self._hand_over(worker, launched)
            return
        self._finish(launched, deliver=_call)
        with self._lock:  # the worker never woke: it is parked again, first in line
            worker.claimed = False
            self._parked.insert(0, worker)
            if self._queue:
                self._wake_one()

    def _wake_one(self) -> None:
        """Under the lock: wake the worker parked longest (it takes the queue from here)."""
        if self._parked:
            self._parked.pop(0).cond.notify()

    def _wake_all(self) -> None:
        """Under the lock: every worker looks at the queue and the flags again."""
        self._parked.clear()
        for worker in self._workers:
            worker.cond.notify()

    def check_room(self) -> None:
        """Raise QueueFull when the queue is at its bound (what submit does first; a front end
        may ask before it reads and decodes a request, so that a refusal costs next to
        nothing)."""
        bound = self.policy.max_queue_size
        if bound and len(self._queue) >= bound:
            raise QueueFull(
                f"model '{self.name}' queue is full ({bound} requests waiting: "
                "dynamic_batching.default_queue_policy.max_queue_size, else the server's "
                "--default-max-queue-size): retry later, add instances, or raise the bound"
            )

    def cancel(self, future: asyncio.Future[dict[str, np.ndarray]]) -> bool:
        """Drop the request of `future` (its client has gone) if it still waits in the queue;
        one already in a batch runs to the end and its result is dropped."""
        with self._lock:
            for i, pending in enumerate(self._queue):
                if pending.future is future:
                    del self._queue[i]
                    if pending.joined is not None:  # its parts already in a batch are dropped
                        pending.joined.finished = True
                    break
            else:
                return False
        self._inflight -= 1
        if not self._inflight:
            self._idle.set()
        return True

    def queue_length(self) -> int:
        return len(self._queue)

    # -- lifecycle (event loop) --------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(
                target=self._serve, args=(worker,), name=f"{self.name}-instance{i}", daemon=True
            )
            for i, worker in enumerate(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self, drain: bool = True) -> None:
        """Refuse new requests; finish (drain=True) or fail the queued ones; close instances."""
        self._stopping = True
        with self._lock:
            dropped = [] if drain else list(self._queue)
            if not drain:
                self._queue.clear()
            self._wake_all()
        for pending in dropped:
            self._finish_error(pending, ServerShuttingDown("the model was unloaded"))
        await self._idle.wait()
        with self._lock:
            self._exit = True
            self._wake_all()
        if self._threads:
            await asyncio.gather(*(asyncio.to_thread(t.join) for t in self._threads))
        else:  # never started: close here
            for instance in self.instances:
                instance.close()

    # -- instance threads --------------------------------------------------------------------

    def _serve(self, worker: _Worker) -> None:
        """One instance's loop. An asynchronous instance keeps one batch launched ahead: the
        next batch is formed and launched before the thread waits for the current one, so
        the CPU work between batches (stacking, the GIL, handing results back) overlaps the
        device's work instead of leaving it idle. Only a batch worth it goes ahead (half the
        model's batch or more, `_due`): a smaller one waits for the pass on the device and
        takes what queued meanwhile (small batches launched ahead under load kept every
        batch small: 15% less throughput, median of six rounds, for four-row requests at
        concurrency 256 on an H200)."""
        instance = worker.instance
        inflight: _Launched | None = None
        try:
            while True:
                batch = self._next_batch(worker, wait=inflight is None)
                if batch is None and inflight is None:
                    return  # stopped and drained
                if isinstance(batch, _Launched):  # the loop launched it (_launch_idle)
                    launched: _Launched | None = batch
                else:
                    launched = self._launch(instance, batch) if batch is not None else None
                if inflight is not None:
                    self._finish(inflight)
                inflight = launched
                if inflight is not None and not instance.asynchronous:
                    self._finish(inflight)
                    inflight = None
        finally:
            try:
                instance.close()
            except Exception:  # noqa: BLE001 - closing must not hide the shutdown
                log.exception("model '%s' failed to close an instance", self.name)

    def _next_batch(self, worker: _Worker, wait: bool = True) -> list[Pending] | _Launched | None:
        """The next batch that is due (full, preferred size, or its delay is up), or one the
        loop launched for this worker while it was parked. With `wait`, block until there is
        one, and return None only when the scheduler is stopped and drained; without, return
        None at once when none is due yet."""
        with self._lock:
            while True:
                if worker.handed is not None:
                    launched, worker.handed = worker.handed, None
                    return launched
                if worker.claimed:  # the loop is launching on this instance: wait for it
                    worker.cond.wait()
                    continue
                if not self._queue:
                    if self._exit or not wait:
                        return None
                    self._park(worker)
                    continue
                now = _now()
                batch = self._due(now, ahead=not wait)
                if batch is not None:
                    return batch
                if not self._queue:
                    continue
                if not wait:
                    return None
                self._park(worker, (self._queue[0].timing.arrival + self._delay_ns - now) / 1e9)

    def _park(self, worker: _Worker, timeout: float | None = None) -> None:
        """Under the lock: wait until woken (or `timeout` seconds), listed as idle meanwhile."""
        self._parked.append(worker)
        try:
            worker.cond.wait(timeout)
        finally:
            if worker in self._parked:  # a timeout, not a wake (a wake takes it off the list)
                self._parked.remove(worker)

    def _due(self, now: int, ahead: bool = False) -> list[Pending] | None:
        """Under the lock: the batch due now, taken from the queue, or None (the queue empty
        once expired requests are dropped, or the head's delay not up). `ahead`: for an
        instance with a pass of its own on the device, which takes only a full batch or one
        of half the target or more; the rest waits for that pass (or for an idle instance)."""
        self._expire(now)
        if not self._queue:
            return None
        if not self.policy.dynamic:
            return [self._queue.popleft()]
        picked, total, full = self._fit()
        if full or total >= self._target or self._stopping:
            return self._take(self._cut(picked))
        if ahead and total * 2 < self._target:
            return None
        if self._send_at:
            cut = self._cut(picked)
            if sum(p.batch_size for p in cut) in self._send_at:
                return self._take(cut)
        if self._queue[0].timing.arrival + self._delay_ns - now <= 0 or self._flush_waits():
            return self._take(picked)
        return None

    def _flush_waits(self) -> bool:
        """Under the lock: a request not to be held for the delay is queued (it may sit
        behind a head it cannot share a batch with, which then goes first)."""
        return self._flushed and any(p.flush for p in self._queue)

    def _fit(self) -> tuple[list[Pending], int, bool]:
        """Requests, in arrival order, that can share a batch with the oldest one.

        Returns them, their cost total (items, or tokens on a model that packs), and whether
        the batch is full (a compatible request had to be left out for lack of room)."""
        max_rows, max_cost = self._max_rows, self._max_cost
        first = self._queue[0]
        picked = [first]
        rows, total = first.batch_size, first.cost
        if first.alone:
            return picked, total, True
        for pending in itertools.islice(self._queue, 1, None):
            if pending.key != first.key or pending.alone:
                continue
            if rows + pending.batch_size > max_rows or total + pending.cost > max_cost:
                head = self._split(pending, max_rows - rows, max_cost - total)
                if head is not None:
                    picked.append(head)
                    total += head.cost
                return picked, total, True
            picked.append(pending)
            rows += pending.batch_size
            total += pending.cost
        return picked, total, rows >= max_rows or total >= max_cost

    def _split(self, pending: Pending, rows: int, tokens: int) -> Pending | None:
        """On a model that packs, the first rows of `pending` that fit `rows` rows and
        `tokens` tokens, as a part of their own; the rest stays queued in its place. Whole
        requests rarely fill a token budget (three requests of 64 SQuAD rows, ~10k tokens
        each, leave a tenth of a 32k budget empty); rows are independent, so the batch is
        filled with part of the next request instead. None when the room left is under a
        sixteenth of the budget (a small request is not worth the split) or no row fits."""
        if pending.batch_size < 2 or rows < 1 or tokens * 16 < self._max_cost:
            return None
        lengths = pending.lengths
        full = lengths is None  # every row full width (no mask): cost = rows x width
        if lengths is None:
            lengths = np.full(pending.batch_size, pending.cost // pending.batch_size, np.int64)
        cumulative = np.cumsum(lengths)
        count = int(np.searchsorted(cumulative, tokens, side="right"))
        count = min(count, rows, pending.batch_size - 1)
        if count < 1:
            return None
        if pending.joined is None:
            pending.joined = _Joined(pending.batch_size)
        cost = int(cumulative[count - 1])
        head = Pending(
            inputs={name: array[:count] for name, array in pending.inputs.items()},
            outputs=pending.outputs, batch_size=count, cost=cost, key=pending.key,
            future=pending.future, timing=pending.timing, deadline_ns=pending.deadline_ns,
            lengths=None if full else lengths[:count], joined=pending.joined,
            offset=pending.offset, flush=pending.flush,
        )  # fmt: skip
        pending.inputs = {name: array[count:] for name, array in pending.inputs.items()}
        pending.lengths = None if full else lengths[count:]
        pending.batch_size -= count
        pending.cost -= cost
        pending.offset += count
        return head

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
        """Drop requests past their deadline (under the lock); the loop fails them."""
        if not any(p.deadline_ns for p in self._queue):
            return
        kept: collections.deque[Pending] = collections.deque()
        expired: list[Pending] = []
        for pending in self._queue:
            if pending.deadline_ns and now >= pending.deadline_ns:
                expired.append(pending)
            else:
                kept.append(pending)
        self._queue = kept
        for pending in expired:
            error = RequestTimeout(
                f"request for model '{self.name}' timed out in the queue after "
                f"{(now - pending.timing.arrival) // 1000} us"
            )
            self._to_loop(self._finish_error, pending, error)

    def _launch(self, instance: ModelInstance, batch: list[Pending]) -> _Launched | None:
        """Stack the batch and start it; a failure fails the batch here (None)."""
        t0 = _now()
        for pending in batch:
            pending.timing.dispatch = t0
        packed = None
        try:
            wanted = list(dict.fromkeys(name for p in batch for name in p.outputs))
            if self._packing is not None:
                packed = pack([p.inputs for p in batch], self._packing, [p.lengths for p in batch])
                t1 = _now()
                wait = instance.launch_packed(packed, wanted)
            else:
                stacked = stack_inputs([p.inputs for p in batch])
                t1 = _now()
                wait = instance.launch(stacked, wanted)
        except Exception as exc:  # noqa: BLE001 - a backend bug must not kill the worker
            self._retry_alone(batch, exc)
            return None
        return _Launched(batch, wait, t0, t1, packed)

    def _finish(self, launched: _Launched, deliver: Callable[..., None] | None = None) -> None:
        """Wait for a launched batch, split its outputs, hand them to the loop (`deliver`:
        on the loop already, a direct call), time it."""
        batch = launched.batch
        try:
            outputs = launched.wait()
            t2 = _now()
            if launched.packed is not None:
                assert self._packing is not None
                parts = unpack(outputs, launched.packed, self._packing.fill)
            elif self.policy.max_batch_size > 0:
                parts = split_outputs(outputs, [p.batch_size for p in batch])
            else:
                parts = [outputs]
            results = [
                {name: part[name] for name in p.outputs}
                for p, part in zip(batch, parts, strict=True)
            ]
        except Exception as exc:  # noqa: BLE001 - a backend bug must not kill the worker
            self._retry_alone(batch, exc)
            return
        t3 = _now()
        t0, t1 = launched.started, launched.input_done
        for pending in batch:
            timing = pending.timing
            timing.input_done, timing.infer_done, timing.output_done = t1, t2, t3
        batch_items = sum(p.batch_size for p in batch)
        self.stats.record_execution(batch_items, t1 - t0, t2 - t1, t3 - t2)
        if batch_log.isEnabledFor(logging.INFO):
            batch_log.info(
                "batch of %s: %d request(s), %d inference(s); input %.2f ms, infer %.2f ms, "
                "output %.2f ms",
                self.name, len(batch), batch_items, (t1 - t0) / 1e6, (t2 - t1) / 1e6,
                (t3 - t2) / 1e6,
            )  # fmt: skip
        (deliver or self._to_loop)(self._complete, batch, results)

    def _retry_alone(self, batch: list[Pending], exc: Exception) -> None:
        """A failed batch of several requests goes back to the front of the queue, each
        request to run in a batch of its own, so that one request the model cannot take
        fails alone instead of taking the others with it (any model, whatever its checks)."""
        if len(batch) == 1:
            self._to_loop(self._fail_batch, batch, self._as_error(exc))
            return
        log.warning(
            "model '%s': a batch of %d requests failed (%s); running each alone",
            self.name,
            len(batch),
            exc,
        )
        with self._lock:
            for pending in reversed(batch):
                pending.alone = True
                self._queue.appendleft(pending)
            self._wake_all()

    def _as_error(self, exc: Exception) -> BertserveError:
        if isinstance(exc, BertserveError):
            return exc
        log.error("model '%s' failed on a batch", self.name, exc_info=exc)
        return InternalError(f"model '{self.name}' failed: {exc}")

    def _to_loop(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        # A closed loop raises RuntimeError: nobody is waiting for these results then.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    # -- results (event loop) ----------------------------------------------------------------

    def _complete(self, batch: list[Pending], results: list[dict[str, np.ndarray]]) -> None:
        for pending, outputs in zip(batch, results, strict=True):
            joined = pending.joined
            if joined is not None:
                if joined.finished:
                    continue
                whole = joined.add(pending, outputs)
                if whole is None:
                    continue
                outputs = whole
            self._inflight -= 1
            if not pending.future.done():
                pending.future.set_result(outputs)
        if not self._inflight:
            self._idle.set()

    def _fail_batch(self, batch: list[Pending], error: BertserveError) -> None:
        for pending in batch:
            self._finish_error(pending, error)

    def _finish_error(self, pending: Pending, error: BertserveError) -> None:
        joined = pending.joined
        if joined is not None:
            if joined.finished:
                return  # the request failed or resolved already (through another part)
            joined.finished = True
        self._inflight -= 1
        if not pending.future.done():
            pending.future.set_exception(error)
        if not self._inflight:
            self._idle.set()
