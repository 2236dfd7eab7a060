"""Write a report directory: report.md, a self-contained report.html, and the PNG figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bertserve.cost.catalog import Catalog
from bertserve.report.analysis import Analysis
from bertserve.report.compose import compose_report
from bertserve.report.document import Block, Figure, render_html, render_markdown
from bertserve.report.plots import breakdown_png, cost_png, latency_throughput_png
from bertserve.report.reference import HeadlineRow, ReferenceBenchmark
from bertserve.report.verdict import Verdict

__all__ = ["ReportFiles", "draw_figures", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    figures: tuple[Path, ...]


def draw_figures(analysis: Analysis) -> list[Figure]:
    figures = [
        Figure(
            "latency_throughput.png",
            latency_throughput_png(analysis),
            f"{analysis.stat} latency per request against throughput, one line per deployment; "
            "the star marks each deployment's best point.",
        ),
        Figure(
            "latency_breakdown.png",
            breakdown_png(analysis),
            "Where the time goes: average latency per request split into client send, "
            "network + server send/receive, server queue, compute input/infer/output and "
            "client receive, at each sweep point.",
        ),
    ]
    cost = cost_png(analysis)
    if cost is not None:
        figures.append(
            Figure(
                "cost_per_million.png",
                cost,
                "Dollars per million inferences at each deployment's best point.",
            )
        )
    return figures


def write_report(
    analysis: Analysis,
    catalog: Catalog,
    out_dir: Path,
    *,
    title: str,
    generated: str,
    reference: tuple[ReferenceBenchmark, list[HeadlineRow]] | None = None,
    verdict: Verdict | None = None,
    sections: Sequence[Block] = (),
) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(analysis)
    blocks = compose_report(
        analysis,
        catalog,
        figures,
        title=title,
        generated=generated,
        reference=reference,
        verdict=verdict,
        sections=sections,
    )
    paths = []
    for figure in [*(b for b in sections if isinstance(b, Figure)), *figures]:
        path = out_dir / figure.filename
        path.write_bytes(figure.png)
        paths.append(path)
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    html = out_dir / "report.html"
    html.write_text(render_html(blocks, title), encoding="utf-8")
    return ReportFiles(markdown=markdown, html=html, figures=tuple(paths))
