"""Variants answering the same questions: accuracy, speed and agreement with the first one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bertserve.qa.metrics import SquadScores, agreement
from bertserve.tables import plain_table

__all__ = [
    "Comparison",
    "VariantResult",
    "compare",
    "format_table",
    "score_table",
    "summary_lines",
]


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


def score_table(
    comparisons: Sequence[Comparison],
) -> tuple[tuple[str, ...], list[tuple[str, ...]], tuple[bool, ...]]:
    """(headers, rows, numeric flags) of the scores; HasAns/NoAns columns show "-" for
    SQuAD v1.1 data."""
    headers: tuple[str, ...] = (
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
    rows: list[tuple[str, ...]] = []
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
    return headers, rows, (False,) + (True,) * (len(headers) - 1)


def format_table(comparisons: Sequence[Comparison]) -> str:
    """The scores as a plain aligned table."""
    return plain_table(*score_table(comparisons))


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
