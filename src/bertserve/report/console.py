"""The report's summary on the terminal, as a rich table."""

from __future__ import annotations

from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table

from bertserve.report import formatting as fmt
from bertserve.report.analysis import Analysis

__all__ = ["print_summary"]


def print_summary(analysis: Analysis, console: Console, extra_lines: tuple[str, ...] = ()) -> None:
    table = Table(title=f"Cost per million inferences at {analysis.budget_text}")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("deployment", "left"),
        ("machine", "left"),
        ("load", "right"),
        ("inferences/s", "right"),
        (f"{analysis.stat} ms", "right"),
        ("$/M inferences", "right"),
    )
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")
    ordered = sorted(
        analysis.summaries,
        key=lambda s: (s.best_cost is None, s.best_cost or 0.0),
    )
    for s in ordered:
        d, m = s.deployment, s.best
        label = escape(d.label) + (" [bold red](random weights)[/]" if d.run.random_weights else "")
        machine = d.machine.id if d.machine else "not given"
        if m is None:
            table.add_row(label, machine, "none within budget", "", "", "n/a")
            continue
        table.add_row(
            label,
            machine,
            fmt.load(m.load, m.mode),
            fmt.rate(m.throughput),
            fmt.ms(m.latency_us(analysis.stat)),
            fmt.dollars(s.best_cost),
        )
    console.print(table)
    for comparison in analysis.comparisons:
        console.print(f"- {escape(comparison.sentence())}", highlight=False, soft_wrap=True)
    for line in extra_lines:
        console.print(escape(line), highlight=False, soft_wrap=True)
