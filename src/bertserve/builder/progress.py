"""Progress of a build, stage by stage: a build of the seed preset runs for minutes, and the
user should see which model and which step (export, optimize, quantize, parity) it is in.

The builder calls `progress.stage(model, what)` around each step; `StageLines` shows a
spinner on a terminal and prints one line per finished step everywhere (a log gets a line
when a step starts, too, since it has no spinner)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["BuildProgress", "SILENT", "StageLines"]


class BuildProgress(Protocol):
    def stage(self, model: str, what: str) -> contextlib.AbstractContextManager[None]: ...


class _Silent:
    def stage(self, model: str, what: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


SILENT: BuildProgress = _Silent()


class StageLines:
    """One line per finished step with its duration; a spinner while it runs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()

    @contextlib.contextmanager
    def stage(self, model: str, what: str) -> Iterator[None]:
        t0 = time.monotonic()
        if not self.console.is_terminal:
            self._line(f"{model}: {what} ...")
        with self.console.status(f"{model}: {what}"):
            yield
        self._line(f"{model}: {what} done in {time.monotonic() - t0:.1f} s")

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[{elapsed:5.0f} s] {text}", markup=False, highlight=False)
