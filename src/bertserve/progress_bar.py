"""A count of done items for long client-side loops (eval's questions): a bar on a terminal,
a line at each quarter in a log."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["CountBar"]


class CountBar:
    """`with CountBar(console, total, "model: questions") as bar: bar.advance(n)`."""

    def __init__(self, console: Console, total: int, description: str) -> None:
        self.console = console
        self.total = max(1, total)
        self.description = description
        self.done = 0
        self._quarter = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> CountBar:
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._progress = Progress(
                "{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.done)
            return
        quarter = min(4, self.done * 4 // self.total)
        if quarter > self._quarter:
            self._quarter = quarter
            self.console.print(
                f"{self.description}: {self.done}/{self.total}", markup=False, highlight=False
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
