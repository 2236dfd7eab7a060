"""What the report says, as document blocks: verdict, cost table, figures, the reference
benchmark reproduced, inputs, prices and every sweep point."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bertserve.cost.catalog import Catalog, Machine
from bertserve.report import formatting as fmt
from bertserve.report.analysis import Analysis, Deployment
from bertserve.report.document import Block, Bullets, Figure, Heading, Paragraph, Table
from bertserve.report.reference import HeadlineRow, ReferenceBenchmark
from bertserve.report.reference_section import reference_section
from bertserve.report.verdict import Verdict

__all__ = ["compose_report"]

_PERCENTILES = ("p50", "p90", "p95", "p99")
_METHOD = (
    "Throughput counts inferences (batch items) per second, as perf_analyzer does; "
    "requests per second = inferences per second / batch size. Latencies are per request.",
    "Cost per million inferences = on-demand price per hour / (inferences per second x 3600) "
    "x 10^6: the machine is assumed busy at the measured rate. Storage, network egress, "
    "idle capacity and discounts are not included.",
    "Best point: the highest throughput whose latency (at the chosen statistic) is within the "
    "budget, ties going to the lower latency; points with request errors are never best.",
    "Latency components are averages: client send and receive are measured by the client, "
    "queue and compute input/infer/output come from the server's statistics, and "
    "network+server send/recv is what remains of the client's average latency "
    "(perf_analyzer clamps it at 0).",
    "For perf_analyzer CSVs, which carry no average latency, avg = the sum of the components.",
    "Ratios read \"A costs 1/N as much per query as B\": B's cost per inference divided by A's.",
)


def compose_report(
    analysis: Analysis,
    catalog: Catalog,
    figures: Sequence[Figure],
    *,
    title: str,
    generated: str,
    reference: tuple[ReferenceBenchmark, list[HeadlineRow]] | None = None,
    verdict: Verdict | None = None,
    sections: Sequence[Block] = (),
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
    blocks += [Paragraph(w, emphasis=True) for w in analysis.warnings]
    if verdict is not None:
        blocks += [Heading(2, "Verdict"), Bullets(verdict.lines())]
    if reference is not None:
        blocks += reference_section(*reference, analysis)
    blocks += list(sections)
    blocks.append(Heading(2, f"Deployments compared at {analysis.budget_text}"))
    if analysis.comparisons:
        blocks.append(Bullets(tuple(c.sentence() for c in analysis.comparisons)))
    blocks.append(_cost_table(analysis))
    if analysis.notes:
        blocks.append(Bullets(analysis.notes))
    blocks.append(Heading(2, "Figures"))
    blocks += list(figures)
    blocks += [Heading(2, "Inputs"), _inputs_table(analysis.deployments)]
    measured = tuple(f"{d.label}: {d.run.notes}" for d in analysis.deployments if d.run.notes)
    if measured:
        blocks += [Paragraph("How each was measured (command line or note):"), Bullets(measured)]
    blocks += [Heading(2, "Prices used"), _prices(analysis.deployments)]
    blocks.append(Heading(2, "Every sweep point"))
    for d in analysis.deployments:
        blocks += [Heading(3, d.label), _points_table(d)]
    blocks += [Heading(2, "Method"), Bullets(_METHOD)]
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


def _inputs_table(deployments: Sequence[Deployment]) -> Table:
    rows = []
    for d in deployments:
        r = d.run
        rows.append(
            (
                d.label,
                d.source,
                r.tool,
                " ".join(x for x in (r.protocol, r.url) if x),
                r.model or "",
                str(r.batch_size),
                str(r.seq_len or ""),
                r.mode,
                str(len(r.measurements)),
                r.date or "",
                "YES" if r.random_weights else "no",
            )
        )
    return Table(
        headers=(
            "deployment",
            "source",
            "tool",
            "server",
            "model",
            "batch",
            "seq",
            "mode",
            "points",
            "date",
            "random weights",
        ),
        rows=tuple(rows),
    )


def _prices(deployments: Sequence[Deployment]) -> Table | Paragraph:
    machines = {d.machine.id: d.machine for d in deployments if d.machine is not None}
    if not machines:
        return Paragraph(
            "None: no deployment names a machine of the price catalog, so nothing is costed. "
            "Tag each input with machine=ID (ids: `bertserve report --list-machines`)."
        )
    rows = tuple(
        (m.id, m.name, fmt.dollars(m.price_per_hour), m.source + _derivation(m), m.as_of)
        for m in machines.values()
    )
    return Table(
        headers=("machine id", "name", "$/hour", "source", "as of"),
        rows=rows,
        numeric=(False, False, True, False, False),
    )


def _derivation(m: Machine) -> str:
    if not m.parts:
        return ""
    if m.share != 1.0:
        return f" ({m.share:g} of {' + '.join(m.parts)})"
    return f" (sum of {', '.join(m.parts)})"


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
