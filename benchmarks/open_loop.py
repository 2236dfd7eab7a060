"""An open-loop HTTP load and what it needs to be judged: requests sent on a fixed schedule
whatever the server answers (each on an idle keep-alive connection, or a new one when none is
idle), the server's resident memory sampled on a thread, and probes that tell when the server
answers as fast as it did unloaded again.

Latency is counted from each request's scheduled send, not from when the generator got to it,
so a server that falls behind cannot hide it (no coordinated omission). Loopback only."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bertserve.perf.http_transport import HttpConnection

__all__ = [
    "CLIENT_TIMEOUT",
    "REFUSED",
    "Outcome",
    "RssSampler",
    "open_loop",
    "percentile",
    "probe_latency",
    "recovery",
]

#: Status recorded for a request whose connection was refused or closed before an answer,
#: and for one that got no answer within the client's timeout.
REFUSED, CLIENT_TIMEOUT = 0, -1


@dataclass(frozen=True, slots=True)
class Outcome:
    due: float  # when it was scheduled, seconds from the start of the load
    latency: float  # seconds from `due` to its answer (or to giving up)
    status: int  # HTTP status, REFUSED or CLIENT_TIMEOUT


async def _open(host: str, port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(HttpConnection, host, port)
    return conn


async def open_loop(
    host: str, port: int, payload: bytes, rate: float, seconds: float, timeout: float
) -> tuple[list[Outcome], float]:
    """Send `payload` `rate` times a second for `seconds`; returns every request's outcome
    and the rate the generator actually kept (it shares the machine with the server)."""
    loop = asyncio.get_running_loop()
    idle: list[HttpConnection] = []
    outcomes: list[Outcome] = []
    start = loop.time()

    async def one(due: float) -> None:
        conn: HttpConnection | None = None
        status = REFUSED
        try:
            conn = idle.pop() if idle else await _open(host, port)
            status, _, _ = await asyncio.wait_for(conn.send(payload), timeout)
        except (OSError, ConnectionError):
            status = REFUSED
        except TimeoutError:
            status = CLIENT_TIMEOUT
        outcomes.append(Outcome(due - start, loop.time() - due, status))
        if conn is not None:
            if status > 0 and not conn.lost:
                idle.append(conn)
            else:
                conn.close()

    tasks: list[asyncio.Task[None]] = []
    count = int(rate * seconds)
    for i in range(count):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    kept = count / max(loop.time() - start, 1e-9)
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return outcomes, kept


async def probe_latency(host: str, port: int, payload: bytes) -> tuple[int, float]:
    """One request on a fresh connection: its status and latency in seconds."""
    started = time.perf_counter()
    try:
        conn = await _open(host, port)
    except OSError:
        return REFUSED, time.perf_counter() - started
    try:
        status, _, _ = await asyncio.wait_for(conn.send(payload), 60)
    except (ConnectionError, TimeoutError):
        status = REFUSED
    finally:
        conn.close()
    return status, time.perf_counter() - started


async def recovery(
    host: str, port: int, payload: bytes, unloaded: float, limit: float = 120.0
) -> float:
    """Seconds from now until a probe is answered (200) within twice the `unloaded` latency
    (plus 2 ms of scheduling slack); probes every 50 ms. `limit` if never."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        status, latency = await probe_latency(host, port, payload)
        if status == 200 and latency <= 2 * unloaded + 0.002:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    return limit


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class RssSampler:
    """A process's resident memory (VmRSS), sampled every `interval` seconds on a thread."""

    pid: int
    interval: float = 0.1
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def now(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append((time.monotonic(), self.now()))
            except OSError:
                return  # the process ended

    def peak(self, since: float, until: float) -> int:
        inside = [rss for t, rss in self.samples if since <= t <= until]
        return max(inside, default=0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
