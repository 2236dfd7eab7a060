from __future__ import annotations

import pytest

from bertserve.qa.evaluation import VariantResult, compare, format_table, summary_lines
from bertserve.qa.metrics import SquadScores


def _result(model: str, f1: float, seconds: float, predictions: dict[str, str]) -> VariantResult:
    scores = SquadScores(exact=f1 - 10, f1=f1, total=len(predictions))
    return VariantResult(model, scores, predictions, seconds, random_weights=model == "int8")


def test_compare_against_the_first_variant() -> None:
    fp32 = _result("fp32", 88.0, 3.1, {"a": "x", "b": "y", "c": "", "d": "w"})
    int8 = _result("int8", 87.4, 1.0, {"a": "x", "b": "y", "c": "", "d": "v"})
    reference, other = compare([fp32, int8])
    assert reference.speedup == 1.0 and reference.same_answers == 100.0
    assert other.speedup == pytest.approx(3.1)
    assert other.same_answers == pytest.approx(75.0)
    assert other.delta_f1 == pytest.approx(-0.6)
    assert summary_lines([reference, other]) == [
        "int8: 3.10x faster, 75% same answers, EM -0.6, F1 -0.6 (vs fp32)"
    ]
    table = format_table([reference, other]).splitlines()
    assert table[0].split()[:3] == ["model", "EM", "F1"]
    assert "int8 (random weights)" in table[2]
    assert table[2].rstrip().endswith("-0.6")
    assert len({len(line) for line in table}) == 1  # columns line up


def test_v1_scores_show_dashes_for_no_answer_columns() -> None:
    [row] = compare([_result("m", 50.0, 1.0, {"a": "x"})])
    assert " - " in format_table([row]).splitlines()[1]


def test_compare_nothing() -> None:
    assert compare([]) == [] and summary_lines([]) == []
