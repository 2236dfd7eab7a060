"""Measurements in, a report folder out (report.md, report.html, the PNG figures) and its
summary on the terminal: the one path `bertserve report` and `bertserve demo` share."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bertserve.cost.catalog import Catalog
from bertserve.cost.host import MachineGuess
from bertserve.perf.results import Run
from bertserve.report.analysis import Analysis, analyze
from bertserve.report.console import print_summary
from bertserve.report.document import Block
from bertserve.report.inputs import InputError
from bertserve.report.reference import (
    HeadlineRow,
    ReferenceBenchmark,
    headline_rows,
    load_reference,
    reference_verdicts,
)
from bertserve.report.verdict import (
    KindOf,
    Verdict,
    pick_sentences,
    reference_sentences,
    unknown_kind,
)
from bertserve.report.writer import ReportFiles, write_report

__all__ = ["WrittenReport", "print_report", "print_verdict", "produce_report"]


@dataclass(frozen=True)
class WrittenReport:
    analysis: Analysis
    files: ReportFiles
    #: The packaged reference benchmark and its README's headline rows, when included.
    reference: tuple[ReferenceBenchmark, list[HeadlineRow]] | None
    verdict: Verdict

    def reference_sentence(self) -> str | None:
        """The reference's verdict, from its CSVs at the README's headline points."""
        if self.reference is None:
            return None
        from_csv, _ = reference_verdicts(*self.reference)
        return f"Reference benchmark, README's headline points: {from_csv.sentence()}."


def produce_report(
    sources: Sequence[tuple[Run, str]],
    catalog: Catalog,
    output: Path,
    *,
    title: str,
    reference: bool = False,
    stat: str = "p99",
    budget_ms: float | None = None,
    guess: MachineGuess | None = None,
    kind_of: KindOf = unknown_kind,
    sections: Sequence[Block] = (),
    verdict_lines: Sequence[str] | None = None,
) -> WrittenReport:
    """Analyze `sources` (each run with where it came from), with the packaged reference
    benchmark's deployments added when `reference`, and write the report into `output`.
    `guess` is how the machine was priced when the user did not say; the verdict names it.
    `kind_of` says what a model is (architecture, device), so the verdict can set it beside
    the reference's deployment of the same model. `sections` are the caller's own blocks
    (`bertserve plan`'s), placed ahead of the deployments; their figures are written beside
    the others. `verdict_lines` replace the verdict's comparisons with the caller's (the
    plan's winner, chosen with its measured noise; its candidates are not deployments to
    set one by one beside the reference)."""
    runs = list(sources)
    bench = load_reference()
    headline = headline_rows(bench, catalog)
    included = (bench, headline) if reference else None
    if reference:
        runs += [(d.run, f"packaged reference: {d.file}") for d in bench.deployments]
    labels = [r.label for r, _ in runs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InputError(
            f"label(s) used twice: {', '.join(duplicates)}; give each --input its own label=NAME"
        )
    analysis = analyze(runs, catalog, stat=stat, budget_ms=budget_ms)
    assumption = guess.sentence() if guess is not None else None
    if verdict_lines is not None:
        verdict = Verdict(assumption=assumption, reference=(), pick=tuple(verdict_lines))
    else:
        verdict = Verdict(
            assumption=assumption,
            reference=reference_sentences(analysis, bench, headline, guess, kind_of),
            pick=pick_sentences(analysis, kind_of),
        )
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    files = write_report(
        analysis,
        catalog,
        output,
        title=title,
        generated=generated,
        reference=included,
        verdict=verdict,
        sections=sections,
    )
    return WrittenReport(analysis, files, included, verdict)


def print_report(
    report: WrittenReport, console: Console, extra_lines: tuple[str, ...] = ()
) -> None:
    """The summary table, its comparisons, `extra_lines`, then the analysis' warnings and
    notes."""
    print_summary(report.analysis, console, extra_lines)
    for note in (*report.analysis.warnings, *report.analysis.notes):
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


def print_verdict(report: WrittenReport, console: Console) -> None:
    """The closing lines both commands end with: how this machine was priced, each
    deployment's dollars against the reference, and which deployment to pick."""
    console.print("", highlight=False)
    for line in report.verdict.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
