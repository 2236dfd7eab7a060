"""The report's summary on the terminal (or in a log): the cost table and its comparisons."""

from __future__ import annotations

from rich.console import Console

from bertserve.report import formatting as fmt
from bertserve.report.analysis import Analysis
from bertserve.tables import print_table

__all__ = ["print_summary"]


def print_summary(analysis: Analysis, console: Console, extra_lines: tuple[str, ...] = ()) -> None:
    headers = (
        "deployment",
        "machine",
        "load",
        "inferences/s",
        f"{analysis.stat} ms",
        "$/M inferences",
    )
    ordered = sorted(
        analysis.summaries,
        key=lambda s: (s.best_cost is None, s.best_cost or 0.0),
    )
    rows = []
    for s in ordered:
        d, m = s.deployment, s.best
        label = d.label + (" (random weights)" if d.run.random_weights else "")
        machine = d.machine.id if d.machine else "not given"
        if m is None:
            rows.append((label, machine, "none within budget", "", "", "n/a"))
            continue
        rows.append(
            (
                label,
                machine,
                fmt.load(m.load, m.mode),
                fmt.rate(m.throughput),
                fmt.ms(m.latency_us(analysis.stat)),
                fmt.dollars(s.best_cost),
            )
        )
    print_table(
        console,
        headers,
        rows,
        (False, False, True, True, True, True),
        title=f"Cost per million inferences at {analysis.budget_text}",
    )
    for comparison in analysis.comparisons:
        console.print(f"- {comparison.sentence()}", highlight=False, markup=False, soft_wrap=True)
    for line in extra_lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
