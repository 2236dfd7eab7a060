from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bertserve.qa.spans import (
    SpanSettings,
    best_span,
    best_spans,
    extract_answer,
    extract_answers,
)
from bertserve.qa.windows import Window


def _brute_force(start: np.ndarray, end: np.ndarray, mask: np.ndarray, max_len: int):  # noqa: ANN202
    best = None
    for i in range(len(start)):
        for j in range(i, min(i + max_len, len(end))):
            if mask[i] and mask[j] and (best is None or start[i] + end[j] > best[2]):
                best = (i, j, float(start[i] + end[j]))
    return best


@pytest.mark.parametrize("seed", range(20))
def test_best_span_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    start = rng.normal(size=n).astype(np.float32)
    end = rng.normal(size=n).astype(np.float32)
    mask = rng.random(n) < 0.7
    max_len = int(rng.integers(1, 12))
    got = best_span(start, end, mask, max_len)
    want = _brute_force(start, end, mask, max_len)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert got[2] == pytest.approx(want[2], abs=1e-5)
        assert got[0] <= got[1] < got[0] + max_len
        assert mask[got[0]] and mask[got[1]]


def test_best_span_respects_max_answer_len() -> None:
    start = np.array([0, 5, 0, 0, 0], dtype=np.float32)
    end = np.array([0, 0, 0, 0, 5], dtype=np.float32)
    mask = np.ones(5, dtype=bool)
    # tokens 1..4 are a 4-token span
    assert best_span(start, end, mask, 3)[2] == pytest.approx(5.0)
    assert best_span(start, end, mask, 4) == (1, 4, pytest.approx(10.0))


CONTEXT = "Alpha beta gamma delta"
#                     [CLS]  q   [SEP] alpha  beta   gamma    delta   [SEP]
OFFSETS = np.array([(0, 0), (0, 1), (0, 0), (0, 5), (6, 10), (11, 16), (17, 22), (0, 0)])
CONTEXT_TOKENS = range(3, 7)


def _window() -> Window:
    n = len(OFFSETS)
    return Window(0, np.zeros(n, np.int64), np.zeros(n, np.int64), CONTEXT_TOKENS, OFFSETS)


def _logits(start_at: int, end_at: int, null: float = 0.0, value: float = 6.0):  # noqa: ANN202
    start = np.zeros(8, dtype=np.float32)
    end = np.zeros(8, dtype=np.float32)
    start[start_at] = end[end_at] = value
    start[0] = end[0] = null
    return start, end


def test_extract_answer_maps_tokens_to_characters() -> None:
    start, end = _logits(4, 5)
    answer = extract_answer(CONTEXT, [_window()], [start], [end], SpanSettings())
    assert (answer.text, answer.start_char, answer.end_char) == ("beta gamma", 6, 16)
    assert not answer.is_impossible
    assert 0.5 < answer.score <= 1.0


def test_extract_answer_takes_the_best_window() -> None:
    weak = _logits(3, 3, value=2.0)
    strong = _logits(6, 6, value=5.0)
    answer = extract_answer(
        CONTEXT, [_window(), _window()], [weak[0], strong[0]], [weak[1], strong[1]], SpanSettings()
    )
    assert answer.text == "delta"


def test_null_answer_when_allowed_and_above_threshold() -> None:
    start, end = _logits(4, 4, null=5.0, value=3.0)  # null 10 vs span 6
    allowed = SpanSettings(allow_impossible=True)
    answer = extract_answer(CONTEXT, [_window()], [start], [end], allowed)
    assert answer.is_impossible
    assert (answer.text, answer.start_char, answer.end_char) == ("", -1, -1)
    assert 0.0 < answer.score <= 1.0
    # A threshold above the margin (10 - 6 = 4) keeps the span.
    lenient = SpanSettings(allow_impossible=True, null_threshold=4.5)
    assert extract_answer(CONTEXT, [_window()], [start], [end], lenient).text == "beta"
    # A SQuAD1.1-style model never answers "no answer".
    assert extract_answer(CONTEXT, [_window()], [start], [end], SpanSettings()).text == "beta"


def test_null_score_is_the_lowest_over_windows() -> None:
    # Window 1 has a low null score: as in run_squad, the minimum counts.
    a = _logits(4, 4, null=5.0, value=3.0)
    b = _logits(5, 5, null=-5.0, value=1.0)
    answer = extract_answer(
        CONTEXT,
        [_window(), _window()],
        [a[0], b[0]],
        [a[1], b[1]],
        SpanSettings(allow_impossible=True),
    )
    assert answer.text == "beta"


def test_extract_answer_needs_a_window() -> None:
    with pytest.raises(ValueError):
        extract_answer(CONTEXT, [], [], [], SpanSettings())


def test_best_spans_of_a_batch_match_each_row_alone() -> None:
    rng = np.random.default_rng(7)
    start = rng.normal(size=(9, 40)).astype(np.float32)
    end = rng.normal(size=(9, 40)).astype(np.float32)
    mask = rng.random((9, 40)) < 0.6
    mask[4] = False  # a row without any valid span
    got_start, got_end, got_value = best_spans(start, end, mask, 7)
    for row in range(9):
        want = _brute_force(start[row], end[row], mask[row], 7)
        if want is None:
            assert got_value[row] == -np.inf
        else:
            assert (got_start[row], got_end[row]) == want[:2]
            assert got_value[row] == pytest.approx(want[2], abs=1e-5)


def test_extract_answers_answers_each_pair_from_its_own_windows() -> None:
    a = _logits(4, 5)
    b = _logits(6, 6, value=5.0)
    weak = _logits(3, 3, value=1.0)
    windows = [_window(), replace(_window(), item=2), replace(_window(), item=2)]
    starts = np.stack([a[0], weak[0], b[0]])
    ends = np.stack([a[1], weak[1], b[1]])
    got = extract_answers([CONTEXT, "unused", CONTEXT], windows, starts, ends, SpanSettings())
    assert got[0] is not None and got[0].text == "beta gamma"
    assert got[1] is None  # a pair without windows
    assert got[2] is not None and got[2].text == "delta"
