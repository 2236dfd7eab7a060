"""Calls made at once, each on a thread of its own (clients that share a batching window,
requests that fill a queue), and what each came to, in the order they completed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence


class Together:
    """`calls` started at once; `outcomes()` waits for them and returns (index in `calls`,
    what the call returned or raised), in the order they completed."""

    def __init__(self, calls: Sequence[Callable[[], object]]) -> None:
        self.done: list[tuple[int, object]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._one, args=c) for c in enumerate(calls)]
        for thread in self.threads:
            thread.start()

    def _one(self, i: int, call: Callable[[], object]) -> None:
        try:
            outcome = call()
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on
            outcome = exc
        with self.lock:
            self.done.append((i, outcome))

    def outcomes(self) -> list[tuple[int, object]]:
        for thread in self.threads:
            thread.join(60)
        return self.done

    def by_index(self) -> list[object]:
        """The outcomes in the order of `calls`."""
        return [outcome for _, outcome in sorted(self.outcomes(), key=lambda done: done[0])]
