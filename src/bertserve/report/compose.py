"""What the report says, as document blocks: verdict, cost table, figures, the reference
benchmark reproduced, inputs, prices and every sweep point."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bertserve.cost.catalog import Catalog
from bertserve.cost.model import format_ratio
from bertserve.report import formatting as fmt
from bertserve.report.analysis import Analysis, Deployment
from bertserve.report.document import Block, Bullets, Figure, Heading, Paragraph, Table
from bertserve.report.reference import (
    HeadlineRow,
    ReferenceBenchmark,
    reference_verdicts,
)

__all__ = ["compose_report"]

_PERCENTILES = ("p50", "p90", "p95", "p99")


def compose_report(
    analysis: Analysis,
    catalog: Catalog,
    figures: Sequence[Figure],
    *,
    title: str,
    generated: str,
    reference: tuple[ReferenceBenchmark, list[HeadlineRow]] | None = None,
) -> list[Block]:
    blocks: list[Block] = [
        Heading(1, title),
        Paragraph(
            f"Generated {generated} by bertserve report. Deployments are judged at "
            f"{analysis.budget_text}. Costs are on-demand prices ({catalog.currency}) divided "
            "by throughput: cost per million inferences = price per hour / (inferences per "
            "second x 3600) x 10^6."
        ),
    ]
    blocks += [Paragraph(n, emphasis=True) for n in analysis.notes if "RANDOM WEIGHTS" in n]
    if analysis.comparisons:
        blocks += [
            Heading(2, "Verdict"),
            Bullets(tuple(c.sentence() for c in analysis.comparisons)),
        ]
    blocks += [Heading(2, "Cost per million inferences at the best point"), _cost_table(analysis)]
    other_notes = tuple(n for n in analysis.notes if "RANDOM WEIGHTS" not in n)
    if other_notes:
        blocks.append(Bullets(other_notes))
    blocks.append(Heading(2, "Figures"))
    blocks += list(figures)
    if reference is not None:
        blocks += _reference_section(*reference)
    blocks += [Heading(2, "Inputs"), _inputs_table(analysis.deployments)]
    blocks += [Heading(2, "Prices used"), _prices_table(analysis.deployments)]
    blocks.append(Heading(2, "Every sweep point"))
    for d in analysis.deployments:
        blocks += [Heading(3, d.label), _points_table(d)]
    return blocks


def _cost_table(analysis: Analysis) -> Table:
    rows = []
    for s in sorted(analysis.summaries, key=lambda s: _sort_cost(s.best_cost)):
        d, m = s.deployment, s.best
        price = fmt.dollars(d.machine.price_per_hour) if d.machine else "n/a"
        if m is None:
            rows.append((d.label, _machine(d), price, "none", "", "", *[""] * 4, "n/a"))
            continue
        rows.append(
            (
                d.label,
                _machine(d),
                price,
                fmt.load(m.load, m.mode),
                fmt.rate(m.throughput),
                fmt.rate(m.requests_per_second),
                *[fmt.ms(m.latency_us(p)) for p in _PERCENTILES],
                fmt.dollars(s.best_cost),
            )
        )
    return Table(
        headers=(
            "deployment",
            "machine",
            "$/hour",
            "best point (load)",
            "inferences/s",
            "requests/s",
            *[f"{p} ms" for p in _PERCENTILES],
            "$ per million inferences",
        ),
        rows=tuple(rows),
        numeric=(False, False, True, True, True, True, True, True, True, True, True),
    )


def _reference_section(bench: ReferenceBenchmark, rows: list[HeadlineRow]) -> list[Block]:
    from_csv, from_readme = reference_verdicts(bench, rows)
    table_rows = []
    for r in rows:
        d, m = r.deployment, r.point
        table_rows.append(
            (
                d.label,
                d.machine or "",
                f"{d.headline_latency_ms:g}",
                f"{d.headline_qps:g}",
                fmt.load(m.load, m.mode),
                fmt.rate(m.throughput),
                fmt.ms(m.latency_us("p90")),
                fmt.ms(m.latency_us("p95")),
                fmt.ms(m.latency_us("p99")),
                fmt.dollars(r.price_per_hour),
                fmt.dollars(r.cost_readme),
                fmt.dollars(r.cost_csv),
            )
        )
    table = Table(
        headers=(
            "model",
            "machine",
            "README latency ms",
            "README qps",
            "CSV point (concurrency)",
            "CSV inferences/s",
            "CSV p90 ms",
            "CSV p95 ms",
            "CSV p99 ms",
            "$/hour",
            "$/M (README qps)",
            "$/M (CSV)",
        ),
        rows=tuple(table_rows),
        numeric=(False, False) + (True,) * 10,
    )
    return [
        Heading(2, "Reference benchmark: the README's table from its CSVs"),
        Paragraph(
            f"{bench.title} ({bench.period}). {bench.setup}. Command: {bench.command}. "
            "Each request carried 2 inferences; qps in the README counts inferences."
        ),
        table,
        Heading(3, "Verdict"),
        Bullets(
            (
                f'README: "{bench.verdict}" Its wording reads backwards; in cost per query:',
                f"From the CSV points: {from_csv.sentence()}.",
                f"From the README's rounded qps: {from_readme.sentence()}.",
            )
        ),
        Heading(3, "How the table relates to the CSVs"),
        Bullets(tuple(_reference_explanations(rows, from_csv.ratio, from_readme.ratio))),
    ]


def _reference_explanations(
    rows: list[HeadlineRow], csv_ratio: float, readme_ratio: float
) -> list[str]:
    notes = [
        "Each README row is matched to the CSV point whose throughput is nearest the README's "
        "qps (the README rounds); where several concurrencies reach the same throughput the "
        "lowest-latency one is taken.",
    ]
    matches = ", ".join(
        f"{r.deployment.label}: {r.deployment.headline_latency_ms:g} ms vs "
        f"{r.closest_stat} {fmt.ms(r.point.latency_us(r.closest_stat))} ms"
        for r in rows
    )
    stats = sorted({r.closest_stat for r in rows})
    notes.append(
        f"The README's latency column is nearest the {' / '.join(stats)} latency at each point, "
        f"rounded loosely ({matches})."
    )
    intervals = [(r, r.budget_p99_ms) for r in rows]
    described = "; ".join(
        f"{r.deployment.label}: " + ("none" if iv is None else _interval(iv)) for r, iv in intervals
    )
    lows = [iv[0] for _, iv in intervals if iv is not None]
    highs = [iv[1] for _, iv in intervals if iv is not None]
    common = len(lows) == len(intervals) and lows and max(lows) < min(highs)
    notes.append(
        "The README does not say how it chose its points. Under the rule this report uses "
        "(highest throughput whose p99 latency is within a budget), each pick needs a p99 budget "
        f"in: {described}. "
        + (
            "One budget fits them all."
            if common
            else "No single budget reproduces all the picks: the GPU points were chosen at a "
            "tighter budget than the CPU ones, so compare deployments at one budget with "
            "--latency-budget-ms to see what a shared SLO does to the verdict."
        )
    )
    for r in rows:
        top = max(r.deployment.run.measurements, key=lambda m: m.throughput)
        if top.throughput > r.point.throughput * 1.05:
            notes.append(
                f"{r.deployment.label}: the sweep reaches {fmt.rate(top.throughput)} inferences/s "
                f"at concurrency {top.load:g} (p99 {fmt.ms(top.latency_us('p99'))} ms); the "
                f"README quotes {fmt.rate(r.point.throughput)} at concurrency {r.point.load:g}."
            )
    notes.append(
        f"The ratio is {format_ratio(csv_ratio)} from the CSV throughputs and "
        f"{format_ratio(readme_ratio)} from the README's rounded qps (465 for 465.333); "
        'the README\'s "more than 163 times" holds for both.'
    )
    return notes


def _inputs_table(deployments: Sequence[Deployment]) -> Table:
    rows = []
    for d in deployments:
        r = d.run
        rows.append(
            (
                d.label,
                d.source,
                r.tool,
                r.model or "",
                str(r.batch_size),
                r.mode,
                str(len(r.measurements)),
                r.date or "",
                "YES" if r.random_weights else "no",
                r.notes or "",
            )
        )
    return Table(
        headers=(
            "deployment",
            "source",
            "tool",
            "model",
            "batch",
            "mode",
            "points",
            "date",
            "random weights",
            "notes",
        ),
        rows=tuple(rows),
    )


def _prices_table(deployments: Sequence[Deployment]) -> Table:
    machines = {d.machine.id: d.machine for d in deployments if d.machine is not None}
    rows = tuple(
        (
            m.id,
            m.name,
            fmt.dollars(m.price_per_hour),
            m.source + (f" (sum of {', '.join(m.parts)})" if m.parts else ""),
            m.as_of,
        )
        for m in machines.values()
    )
    return Table(
        headers=("machine id", "name", "$/hour", "source", "as of"),
        rows=rows,
        numeric=(False, False, True, False, False),
    )


def _points_table(d: Deployment) -> Table:
    rows = []
    for m in d.run.measurements:
        rows.append(
            (
                fmt.load(m.load, m.mode),
                fmt.rate(m.throughput),
                fmt.ms(m.latency_us("avg")),
                *[fmt.ms(m.latency_us(p)) for p in _PERCENTILES],
                fmt.ms(m.server_queue_us),
                fmt.ms(
                    m.server_compute_input_us
                    + m.server_compute_infer_us
                    + m.server_compute_output_us
                ),
                str(m.errors),
                fmt.dollars(d.cost(m)),
            )
        )
    return Table(
        headers=(
            "load",
            "inferences/s",
            "avg ms",
            *[f"{p} ms" for p in _PERCENTILES],
            "queue ms",
            "compute ms",
            "errors",
            "$ per million inferences",
        ),
        rows=tuple(rows),
        numeric=(True,) * 11,
    )


def _machine(d: Deployment) -> str:
    return d.machine.id if d.machine is not None else "not given"


def _sort_cost(cost: float | None) -> float:
    return math.inf if cost is None else cost


def _interval(interval: tuple[float, float]) -> str:
    low, high = interval
    if math.isinf(high):
        return f"{low:,.1f} ms or more"
    return f"{low:,.1f} to under {high:,.1f} ms"
