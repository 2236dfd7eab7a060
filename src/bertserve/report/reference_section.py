"""The report's section on the reference benchmark: the README's table from its CSVs, its
verdict as cost per query, and what the data says about how the README chose its points."""

from __future__ import annotations

import math

from bertserve.cost.model import compare_costs, format_ratio
from bertserve.report import formatting as fmt
from bertserve.report.analysis import Analysis
from bertserve.report.document import Block, Bullets, Heading, Paragraph, Table
from bertserve.report.reference import HeadlineRow, ReferenceBenchmark, reference_verdicts

__all__ = ["reference_section"]


def reference_section(
    bench: ReferenceBenchmark, rows: list[HeadlineRow], analysis: Analysis
) -> list[Block]:
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
                f'README: "{bench.verdict}" Stated as cost per query:',
                f"From the CSV points: {from_csv.sentence()}.",
                f"From the README's rounded qps: {from_readme.sentence()}.",
                _shared_budget_verdict(bench, analysis),
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
    verdict = "One budget fits them all."
    if not common:
        tightest = min(
            ((r, iv) for r, iv in intervals if iv is not None), key=lambda riv: riv[1][1]
        )
        loosest = max(((r, iv) for r, iv in intervals if iv is not None), key=lambda riv: riv[1][0])
        verdict = (
            "No single budget reproduces all the picks: "
            f"{tightest[0].deployment.label} needs under {tightest[1][1]:,.1f} ms, "
            f"{loosest[0].deployment.label} {loosest[1][0]:,.1f} ms or more. The README "
            "compares each deployment at its own operating point; the verdict's last line "
            "uses one shared budget."
        )
    notes.append(
        "The README does not say how it chose its points. Under the rule this report uses "
        "(highest throughput whose p99 latency is within a budget), each pick needs a p99 budget "
        f"in: {described}. {verdict}"
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


def _shared_budget_verdict(bench: ReferenceBenchmark, analysis: Analysis) -> str:
    """The verdict's two deployments judged at this report's one budget."""
    by_label = {s.deployment.label: s for s in analysis.summaries}
    pair = [by_label[bench.deployment(i).label] for i in (bench.baseline, bench.contender)]
    prefix = f"At this report's one budget for all ({analysis.budget_text}): "
    missing = [s.deployment.label for s in pair if s.best is None]
    if missing:
        return prefix + f"{' and '.join(missing)} has no point within it."
    (base, base_cost), (cont, cont_cost) = ((s, s.best_cost) for s in pair)
    assert base_cost is not None and cont_cost is not None and base.best and cont.best
    comparison = compare_costs(base.deployment.label, base_cost, cont.deployment.label, cont_cost)
    points = ", ".join(
        f"{s.deployment.label} at {fmt.load_phrase(s.best.load, s.best.mode)}"
        for s in (cont, base)
        if s.best is not None
    )
    return prefix + f"{comparison.sentence()}; best points: {points}."


def _interval(interval: tuple[float, float]) -> str:
    low, high = interval
    if math.isinf(high):
        return f"{low:,.1f} ms or more"
    return f"{low:,.1f} to under {high:,.1f} ms"
