"""The two ways of offering load, as perf_analyzer's modes.

- `ConcurrencyLoad` (closed loop): N slots, each on its own connection, each sending its next
  request as soon as the previous response arrives, so N requests are always in flight.
- `RequestRateLoad` (open loop): sends leave on a schedule (constant gaps or Poisson arrivals)
  whatever the responses do; latency runs from the scheduled send time, so a slow server or a
  late client shows up in the numbers (no coordinated omission). A send more than
  `LATE_NS` after its time counts as delayed; one that finds `max_in_flight` requests already
  outstanding is dropped and counted.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertserve.perf.transport import Connection, Transport
from bertserve.perf.window import Recorder

__all__ = ["LATE_NS", "ConcurrencyLoad", "LoadGenerator", "RequestRateLoad", "send_gaps"]

#: A scheduled send leaving later than this counts as delayed (the event loop's timers have
#: millisecond resolution).
LATE_NS = 1_000_000
_RECONNECT_PAUSE_S = 0.05


def send_gaps(distribution: str, rate: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` gaps in ns between scheduled sends: all 1/rate (constant), or exponentially
    distributed with mean 1/rate (poisson: arrivals of a Poisson process)."""
    mean_ns = 1e9 / rate
    if distribution == "poisson":
        return rng.exponential(mean_ns, count)
    return np.full(count, mean_ns)


class LoadGenerator(abc.ABC):
    def __init__(
        self,
        transport: Transport,
        payloads: Sequence[Any],
        recorder: Recorder,
        *,
        warmup_requests: int = 2,
    ) -> None:
        if not payloads:
            raise ValueError("no payloads to send")
        self.transport = transport
        self.payloads = list(payloads)
        self.recorder = recorder
        self.warmup_requests = warmup_requests
        self.failure: BaseException | None = None
        """Set when the load could not be kept up (the server went away); the sweep stops."""

    async def _warm_connection(self) -> Connection:
        conn = await self.transport.connect()
        for i in range(self.warmup_requests):
            await conn.infer(self.payloads[i % len(self.payloads)])
        return conn

    @abc.abstractmethod
    async def set_level(self, level: float) -> None:
        """Change the offered load (concurrency, or requests per second)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop sending, let in-flight requests finish and close connections."""


class ConcurrencyLoad(LoadGenerator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots: list[tuple[asyncio.Task[None], list[bool]]] = []

    async def set_level(self, level: float) -> None:
        target = int(level)
        while len(self._slots) > target:
            _task, running = self._slots.pop()
            running[0] = False
        new = target - len(self._slots)
        if new > 0:
            conns = await asyncio.gather(*(self._warm_connection() for _ in range(new)))
            for conn in conns:
                running = [True]
                offset = len(self._slots)
                task = asyncio.create_task(self._slot(conn, offset, running))
                self._slots.append((task, running))

    async def _slot(self, conn: Connection, offset: int, running: list[bool]) -> None:
        payloads = self.payloads
        n = len(payloads)
        add = self.recorder.add
        clock = time.perf_counter_ns
        i = offset
        try:
            while running[0]:
                payload = payloads[i % n]
                i += 1
                start = clock()
                try:
                    ok, send_ns, recv_ns = await conn.infer(payload)
                except ConnectionError:
                    add(start, clock(), 0, 0, False)
                    conn.close()
                    await asyncio.sleep(_RECONNECT_PAUSE_S)
                    conn = await self.transport.connect()
                    continue
                add(start, clock(), send_ns, recv_ns, ok)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by the sweep, which stops
            self.failure = exc
        finally:
            conn.close()

    async def stop(self) -> None:
        for _task, running in self._slots:
            running[0] = False
        tasks = [task for task, _ in self._slots]
        self._slots = []
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=30)
            for task in pending:
                task.cancel()


class RequestRateLoad(LoadGenerator):
    def __init__(
        self,
        *args: Any,
        distribution: str = "constant",
        max_in_flight: int = 256,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if distribution not in ("constant", "poisson"):
            raise ValueError(f"unknown request distribution {distribution!r}")
        self.distribution = distribution
        self.max_in_flight = max_in_flight
        self._rng = np.random.default_rng(seed)
        self._idle: list[Connection] = []
        self._in_flight = 0
        self._sent = 0
        self._scheduler: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()

    async def set_level(self, level: float) -> None:
        if level <= 0:
            raise ValueError(f"request rate must be > 0, not {level}")
        await self._stop_scheduler()
        if not self._idle:
            # Enough warm connections for the expected in-flight count at small latencies;
            # more are opened on demand (their connect time counts in the latency).
            warm = min(self.max_in_flight, 4)
            self._idle = list(await asyncio.gather(*(self._warm_connection() for _ in range(warm))))
        self._scheduler = asyncio.create_task(self._schedule(level))

    def _gaps(self, rate: float, count: int) -> np.ndarray:
        return send_gaps(self.distribution, rate, count, self._rng)

    async def _schedule(self, rate: float) -> None:
        clock = time.perf_counter_ns
        gaps = self._gaps(rate, 4096)
        g = 0
        due = float(clock())
        try:
            while True:
                now = clock()
                while due <= now:
                    self._launch(int(due), now)
                    due += gaps[g]
                    g += 1
                    if g == len(gaps):
                        gaps, g = self._gaps(rate, 4096), 0
                await asyncio.sleep(max(0.0, (due - clock()) / 1e9))
        except asyncio.CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - reported by the sweep, which stops
            self.failure = exc

    def _launch(self, scheduled_ns: int, now_ns: int) -> None:
        recorder = self.recorder
        if now_ns - scheduled_ns > LATE_NS:
            recorder.delayed += 1
        if self._in_flight >= self.max_in_flight:
            recorder.dropped += 1
            return
        self._in_flight += 1
        conn = self._idle.pop() if self._idle else None
        payload = self.payloads[self._sent % len(self.payloads)]
        self._sent += 1
        task = asyncio.create_task(self._one(conn, payload, scheduled_ns))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _one(self, conn: Connection | None, payload: Any, scheduled_ns: int) -> None:
        try:
            if conn is None:
                conn = await self.transport.connect()
            ok, send_ns, recv_ns = await conn.infer(payload)
        except ConnectionError:
            self.recorder.add(scheduled_ns, time.perf_counter_ns(), 0, 0, False)
            if conn is not None:
                conn.close()
            return
        except Exception as exc:  # noqa: BLE001 - reported by the sweep, which stops
            self.failure = exc
            return
        finally:
            self._in_flight -= 1
        self.recorder.add(scheduled_ns, time.perf_counter_ns(), send_ns, recv_ns, ok)
        self._idle.append(conn)

    async def _stop_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None

    async def stop(self) -> None:
        await self._stop_scheduler()
        if self._requests:
            _done, pending = await asyncio.wait(set(self._requests), timeout=30)
            for task in pending:
                task.cancel()
        for conn in self._idle:
            conn.close()
        self._idle = []
