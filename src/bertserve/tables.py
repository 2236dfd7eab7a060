"""Tables that never cut a number: boxed on a terminal, plain and aligned everywhere else.

On a terminal the table is drawn with rich at widths chosen here: numeric columns keep
their widest cell, text columns shrink only down to their longest word (so they wrap
between words, never inside a name). When even that does not fit, or when the output is
a file or a pipe, the table is printed as plain aligned text at full width: a log or a
CI transcript keeps every digit.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["make_console", "plain_table", "print_table"]

#: What rich's default box adds around n columns: "│ " + " │ " between + " │".
_BORDER_PER_COLUMN = 3


def make_console(*, stderr: bool = False) -> Console:
    """A rich console that wraps nothing when its output is not a terminal (a log keeps
    whole lines)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=not stream.isatty())


def plain_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: Sequence[bool] = (),
    *,
    gap: str = "  ",
) -> str:
    """Aligned columns (numbers right, text left), as wide as the content needs."""
    flags = list(numeric) or [False] * len(headers)
    table = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(row, widths, flags, strict=True)
        ]
        lines.append(gap.join(cells).rstrip())
    return "\n".join(lines)


def print_table(
    console: Console,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: Sequence[bool] = (),
    *,
    title: str = "",
    caption: str = "",
) -> None:
    """`rows` of already formatted cells; `numeric` marks right-aligned columns whose cells
    are never wrapped or cut."""
    flags = list(numeric) or [False] * len(headers)
    widths = _fit(headers, rows, flags, console.width) if console.is_terminal else None
    if widths is None:
        text = plain_table(headers, rows, flags)
        parts = [p for p in (title, text, caption) if p]
        console.print("\n".join(parts), markup=False, highlight=False, soft_wrap=True)
        return
    from rich.table import Table

    table = Table(title=title or None, caption=caption or None)
    for header, width, num in zip(headers, widths, flags, strict=True):
        table.add_column(
            header,
            justify="right" if num else "left",
            width=width,  # >= the widest number: only a header may wrap, between words
            overflow="fold",
        )
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _fit(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: list[bool], width: int
) -> list[int] | None:
    """Column widths that fit `width` without cutting a number or a word; None if none do."""
    columns = list(zip(headers, *rows, strict=True))
    natural = [max(len(cell) for cell in cells) for cells in columns]
    smallest = [
        max(len(cell) for cell in cells[1:]) if num and len(cells) > 1 else _longest_word(cells)
        for cells, num in zip(columns, numeric, strict=True)
    ]
    # Numbers keep every digit; only their headers may wrap.
    smallest = [
        max(low, _longest_word(cells[:1])) for low, cells in zip(smallest, columns, strict=True)
    ]
    room = width - _BORDER_PER_COLUMN * len(headers) - 1
    if sum(smallest) > room:
        return None
    widths = list(natural)
    # Take the excess from the widest shrinkable column, one character at a time.
    while sum(widths) > room:
        i = max(range(len(widths)), key=lambda k: widths[k] - smallest[k])
        if widths[i] <= smallest[i]:
            return None
        widths[i] -= 1
    return widths


def _longest_word(cells: Sequence[str]) -> int:
    return max((len(word) for cell in cells for word in cell.split()), default=1)
