from __future__ import annotations

import pytest

from bertserve.qa.metrics import agreement, exact_match, f1, normalize_answer, score_predictions
from bertserve.qa.squad import Example


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an  apple, a PEAR ", "apple pear"),
        ("theatre", "theatre"),
        ("U.S.-based", "usbased"),
        ("", ""),
    ],
)
def test_normalize_answer_as_official_script(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


def test_exact_match_and_f1() -> None:
    assert exact_match("the Paraffin.", "paraffin") == 1
    assert exact_match("paraffin oil", "paraffin") == 0
    # precision 1/2, recall 1/1 -> F1 2/3
    assert f1("paraffin oil", "paraffin") == pytest.approx(2 / 3)
    assert f1("whale oil", "paraffin") == 0.0
    assert f1("", "") == 1.0
    assert f1("", "paraffin") == 0.0
    assert f1("a", "the") == 1.0  # both normalise to nothing


def _example(qid: str, answers: tuple[str, ...]) -> Example:
    return Example(qid, "t", "q?", "c", answers, tuple(0 for _ in answers), not answers)


def test_score_predictions_v2_splits_has_and_no_answer() -> None:
    examples = [
        _example("a", ("Mirela Costa", "the engineer Mirela Costa")),
        _example("b", ("38 metres",)),
        _example("c", ()),
        _example("d", ()),
    ]
    predictions = {"a": "engineer Mirela Costa", "b": "38", "c": "", "d": "Anselm Reyes"}
    scores = score_predictions(examples, predictions)
    assert scores.total == 4
    assert scores.has_ans_total == 2 and scores.no_ans_total == 2
    assert scores.has_ans_exact == pytest.approx(50.0)  # a matches its second gold
    assert scores.has_ans_f1 == pytest.approx((100.0 + 100.0 * 2 / 3) / 2)
    assert scores.no_ans_exact == pytest.approx(50.0)
    assert scores.exact == pytest.approx(50.0)
    assert scores.f1 == pytest.approx((1 + 2 / 3 + 1 + 0) / 4 * 100)


def test_missing_prediction_scores_zero_and_v1_has_no_no_ans() -> None:
    scores = score_predictions([_example("a", ("x",)), _example("b", ("y",))], {"a": "x"})
    assert scores.exact == pytest.approx(50.0)
    assert scores.no_ans_total == 0 and scores.no_ans_exact is None


def test_gold_answers_that_normalise_to_nothing_count_as_unanswerable() -> None:
    scores = score_predictions([_example("a", ("the",))], {"a": ""})
    assert scores.exact == 100.0 and scores.no_ans_total == 1


def test_agreement_compares_normalised_answers() -> None:
    reference = {"a": "The fox", "b": "", "c": "dog", "d": "cat"}
    other = {"a": "fox.", "b": "", "c": "a dog", "d": "mouse"}
    assert agreement(reference, other) == pytest.approx(75.0)
    assert agreement(reference, {}) == 0.0
