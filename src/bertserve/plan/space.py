"""The space searched: a ladder of values per knob, one step along a ladder as a move, and
the canonical form that makes configurations the batcher treats alike one candidate.

Ladders are ordered, so "one step up" means something (the next larger batch, one more
instance); the search walks them instead of enumerating their cross product. Values the
server's own config holds are on the ladders too, so the search can step back to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from bertserve.plan.knobs import Knobs

__all__ = ["DIMENSIONS", "Limits", "Move", "Space"]

#: max_batch_size steps (powers of two).
BATCH_STEPS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: max_queue_delay_microseconds steps.
DELAY_STEPS: tuple[int, ...] = (0, 100, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
#: Threads per instance steps.
THREAD_STEPS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)

#: The knobs in the order moves along them are tried when nothing else says which first:
#: capacity first (bigger batches, more instances), then latency (shorter delay), threads,
#: the preferred sizes, then the steps back.
DIMENSIONS: tuple[str, ...] = (
    "max_batch_size",
    "instances",
    "queue_delay_us",
    "threads",
    "preferred",
)


@dataclass(frozen=True, slots=True)
class Move:
    """One step along one knob's ladder: +1 up, -1 down (for preferred: on / off)."""

    dimension: str
    step: int

    def text(self) -> str:
        if self.dimension == "preferred":
            return "preferred sizes on" if self.step > 0 else "preferred sizes off"
        if self.dimension == "split":
            return (
                "the threads split among more instances"
                if self.step > 0
                else ("the threads pooled into fewer instances")
            )
        return f"{self.dimension} {'up' if self.step > 0 else 'down'}"


@dataclass(frozen=True, slots=True)
class Limits:
    """What bounds the ladders."""

    #: Inferences per request (`-b`): max_batch_size below it cannot take a request.
    client_batch: int = 1
    #: Largest max_batch_size tried.
    max_batch_size: int = 128
    #: Most instances tried.
    max_instances: int = 8
    #: vCPUs of the machine: threads x instances above it oversubscribe it (None: unknown).
    vcpus: int | None = None
    #: Whether threads per instance is a knob (onnxruntime on CPU).
    threads: bool = False
    #: Whether the model batches at all (max_batch_size > 0).
    batching: bool = True
    #: Queue delays at or above this (the latency budget, in us) are never tried.
    max_delay_us: float = float("inf")


def halves(batch: int) -> tuple[int, ...]:
    """The preferred sizes the search sets: max_batch_size and its half (dispatch a batch at
    half size when the delay is up, rather than any size)."""
    return (batch // 2, batch) if batch >= 4 else ()


class Space:
    """Ladders, neighbours and canonical forms for one model."""

    def __init__(self, seed: Knobs, limits: Limits) -> None:
        self.limits = limits
        self.seed = seed
        if limits.batching:
            top = max(limits.max_batch_size, seed.max_batch_size, limits.client_batch)
            batch = [b for b in BATCH_STEPS if limits.client_batch <= b <= top]
            self.batches = _ladder(batch, seed.max_batch_size, limits.client_batch)
            delays = [d for d in DELAY_STEPS if d < limits.max_delay_us]
            self.delays = _ladder(delays or [0], seed.queue_delay_us)
        else:
            self.batches = (seed.max_batch_size,)
            self.delays = (seed.queue_delay_us,)
        instances = max(limits.max_instances, seed.instances)
        self.instances = tuple(range(1, instances + 1))
        if limits.threads:
            top = limits.vcpus or max(THREAD_STEPS)
            threads = [t for t in THREAD_STEPS if t <= top]
            self.threads = _ladder(threads, seed.threads or self.default_threads(seed.instances))
        else:
            self.threads = (seed.threads,)

    def default_threads(self, instances: int) -> int:
        """onnxruntime's threads when none are set: the vCPUs shared among the instances."""
        return max(1, (self.limits.vcpus or 1) // max(instances, 1))

    def canonical(self, knobs: Knobs) -> Knobs:
        """The one representative of the knobs the batcher cannot tell apart."""
        batch = knobs.max_batch_size
        if batch <= 1:
            # Every batch is one request: no sizes to prefer, no reason to wait.
            return replace(knobs, preferred=(), queue_delay_us=0, threads=self._threads(knobs))
        preferred = halves(batch) if knobs.preferred and set(knobs.preferred) != {batch} else ()
        return replace(knobs, preferred=preferred, threads=self._threads(knobs))

    def _threads(self, knobs: Knobs) -> int:
        if not self.limits.threads:
            return knobs.threads
        return knobs.threads or self.default_threads(knobs.instances)

    def oversubscribes(self, knobs: Knobs) -> bool:
        vcpus = self.limits.vcpus
        return bool(self.limits.threads and vcpus and knobs.threads * knobs.instances > vcpus)

    def moves(self, knobs: Knobs, first: Iterable[Move] = ()) -> list[tuple[Move, Knobs]]:
        """Each one-step neighbour of `knobs` (canonical, distinct, on the ladders), the
        moves in `first` ahead of the rest."""
        order = list(dict.fromkeys([*first, *self._all_moves()]))
        out: list[tuple[Move, Knobs]] = []
        seen = {self.canonical(knobs)}
        for move in order:
            moved = self.step(knobs, move)
            if moved is None:
                continue
            moved = self.canonical(moved)
            if moved not in seen:
                seen.add(moved)
                out.append((move, moved))
        return out

    def _all_moves(self) -> list[Move]:
        up = [Move(d, +1) for d in DIMENSIONS if d != "queue_delay_us"]
        down = [Move(d, -1) for d in DIMENSIONS if d != "queue_delay_us"]
        # Splitting the same cores among more instances is the move a machine full of
        # threads needs (one more instance alone would oversubscribe it).
        split = [Move("split", +1), Move("split", -1)] if self.limits.threads else []
        # A shorter delay is the hopeful direction for latency; a longer one comes last.
        return [
            *up[:2],
            *split[:1],
            Move("queue_delay_us", -1),
            *up[2:],
            *down,
            *split[1:],
            Move("queue_delay_us", +1),
        ]

    def step(self, knobs: Knobs, move: Move) -> Knobs | None:
        knobs = self.canonical(knobs)
        if move.dimension == "split":
            return self._split(knobs, move.step)
        if move.dimension == "preferred":
            if knobs.max_batch_size < 4 or bool(knobs.preferred) == (move.step > 0):
                return None
            return replace(knobs, preferred=halves(knobs.max_batch_size) if move.step > 0 else ())
        ladder = {
            "max_batch_size": self.batches,
            "instances": self.instances,
            "queue_delay_us": self.delays,
            "threads": self.threads,
        }[move.dimension]
        value = getattr(knobs, move.dimension)
        position = _position(ladder, value)
        target = position + move.step
        if not 0 <= target < len(ladder) or ladder[target] == value:
            return None
        moved = _with(knobs, move.dimension, ladder[target])
        if move.dimension == "max_batch_size" and knobs.preferred:
            moved = replace(moved, preferred=halves(moved.max_batch_size))
        if move.dimension == "max_batch_size" and moved.max_batch_size <= 1:
            moved = replace(moved, preferred=(), queue_delay_us=0)
        if move.dimension == "queue_delay_us" and knobs.max_batch_size <= 1:
            return None
        return moved

    def _split(self, knobs: Knobs, step: int) -> Knobs | None:
        """The threads split among more instances (pooled into fewer), every core the
        instances had kept busy: the nearest instance count that uses as many of them."""
        cores = knobs.threads * knobs.instances
        if step > 0:
            counts = [n for n in self.instances if n > knobs.instances]
        else:
            counts = [n for n in reversed(self.instances) if n < knobs.instances]
        options = []
        for n in counts:
            fits = [t for t in self.threads if t * n <= cores]
            if fits and max(fits) != knobs.threads:
                options.append((n, max(fits)))
        if not options:
            return None
        used = max(n * t for n, t in options)
        n, t = next((n, t) for n, t in options if n * t == used)
        return replace(knobs, instances=n, threads=t)

    def size(self) -> int:
        """Distinct canonical configurations on the ladders (what a grid would measure)."""
        grid = {
            self.canonical(Knobs(b, p, d, n, t))
            for b in self.batches
            for p in ((), (0,))
            for d in self.delays
            for n in self.instances
            for t in self.threads
        }
        return sum(1 for k in grid if not self.oversubscribes(k))


def _with(knobs: Knobs, dimension: str, value: int) -> Knobs:
    if dimension == "max_batch_size":
        return replace(knobs, max_batch_size=value)
    if dimension == "instances":
        return replace(knobs, instances=value)
    if dimension == "queue_delay_us":
        return replace(knobs, queue_delay_us=value)
    return replace(knobs, threads=value)


def _ladder(steps: Iterable[int], *also: int) -> tuple[int, ...]:
    return tuple(sorted({*steps, *(v for v in also if v >= 0)}))


def _position(ladder: tuple[int, ...], value: int) -> int:
    """Index of `value`, or of the ladder value just below it (a value between steps)."""
    if value in ladder:
        return ladder.index(value)
    below = [i for i, v in enumerate(ladder) if v < value]
    return below[-1] if below else 0
