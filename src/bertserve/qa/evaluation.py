"""Variants answering the same questions: accuracy, speed and agreement with the first one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bertserve.qa.metrics import SquadScores, agreement

__all__ = ["VariantResult", "Comparison", "compare", "format_table", "summary_lines"]


@dataclass(frozen=True, slots=True)
class VariantResult:
    model: str
    scores: SquadScores
    predictions: dict[str, str]  # question id -> answer text ("" = no answer)
    seconds: float
    random_weights: bool = False

    @property
    def questions_per_second(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Comparison:
    """One variant against the reference (the first variant)."""

    result: VariantResult
    speedup: float  # reference seconds / this variant's seconds
    same_answers: float  # percent of questions with the same normalised answer
    delta_exact: float
    delta_f1: float


def compare(results: Sequence[VariantResult]) -> list[Comparison]:
    if not results:
        return []
    reference = results[0]
    return [
        Comparison(
            result=r,
            speedup=reference.seconds / r.seconds if r.seconds > 0 else 0.0,
            same_answers=agreement(reference.predictions, r.predictions),
            delta_exact=r.scores.exact - reference.scores.exact,
            delta_f1=r.scores.f1 - reference.scores.f1,
        )
        for r in results
    ]


def _cell(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def format_table(comparisons: Sequence[Comparison]) -> str:
    """A fixed-width table; HasAns/NoAns columns show "-" for SQuAD v1.1 data."""
    header = (
        "model",
        "EM",
        "F1",
        "HasAns EM",
        "HasAns F1",
        "NoAns EM",
        "q/s",
        "speedup",
        "same answers",
        "dEM",
        "dF1",
    )
    rows = [header]
    for c in comparisons:
        s = c.result.scores
        name = c.result.model + (" (random weights)" if c.result.random_weights else "")
        rows.append(
            (
                name,
                _cell(s.exact),
                _cell(s.f1),
                _cell(s.has_ans_exact),
                _cell(s.has_ans_f1),
                _cell(s.no_ans_exact),
                _cell(c.result.questions_per_second),
                f"{c.speedup:.2f}x",
                f"{c.same_answers:.1f}%",
                f"{c.delta_exact:+.1f}",
                f"{c.delta_f1:+.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(lines)


def summary_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """One sentence a report can quote per variant after the first."""
    if not comparisons:
        return []
    reference = comparisons[0].result.model
    return [
        f"{c.result.model}: {c.speedup:.2f}x {'faster' if c.speedup >= 1 else 'the speed'}, "
        f"{c.same_answers:.0f}% same answers, EM {c.delta_exact:+.1f}, F1 {c.delta_f1:+.1f} "
        f"(vs {reference})"
        for c in comparisons[1:]
    ]
