"""Start/end logits of a pair's windows -> one answer: the best valid span over all windows.

A span is valid when both ends lie in the context, start <= end and it is at most
`max_answer_len` tokens long. Spans are compared across windows by logit sum (start + end), as
BERT's run_squad does. For SQuAD2-style models the null answer is the [CLS] position (index 0)
and its logit is the lowest over the windows; the pair is unanswerable when
`null - best > null_threshold`.

`score` is a probability: softmax of the start and end logits over the window's context tokens
and [CLS], multiplied (the null answer's score when unanswerable). Offsets are Python string
indices (Unicode code points) into the context; `end_char` is exclusive; both are -1 when the
answer is the null answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bertserve.qa.windows import Window

__all__ = ["SpanSettings", "Answer", "best_span", "best_spans", "extract_answer", "extract_answers"]

_NULL_INDEX = 0  # [CLS]


@dataclass(frozen=True, slots=True)
class SpanSettings:
    max_answer_len: int = 30
    #: SQuAD2-style model: may answer "no answer". False for SQuAD1.1-style models.
    allow_impossible: bool = False
    null_threshold: float = 0.0


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    score: float
    start_char: int
    end_char: int
    is_impossible: bool


def best_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, mask: np.ndarray, max_answer_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best span of every row of (windows, tokens) logits at once: (start, end, logit sum)
    arrays, the sum -inf where a row has no valid span.

    Scans each span length as one vector operation over all rows, so a batch of windows
    costs max_answer_len passes over its logits instead of that many per window. Ties go to
    the shorter span, then the earlier start."""
    rows, n = start_logits.shape
    starts = np.where(mask, start_logits, -np.inf)
    ends = np.where(mask, end_logits, -np.inf)
    best = np.full(rows, -np.inf)
    best_start = np.zeros(rows, dtype=np.int64)
    best_end = np.zeros(rows, dtype=np.int64)
    index = np.arange(rows)
    for length in range(min(max_answer_len, n)):
        sums = starts[:, : n - length] + ends[:, length:]
        at = sums.argmax(axis=1)
        value = sums[index, at]
        better = value > best
        best = np.where(better, value, best)
        best_start = np.where(better, at, best_start)
        best_end = np.where(better, at + length, best_end)
    return best_start, best_end, best


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, mask: np.ndarray, max_answer_len: int
) -> tuple[int, int, float] | None:
    """Best (start, end, logit sum) with both ends where `mask` is true; None if there is none."""
    (i,), (j,), (value,) = best_spans(
        start_logits[None], end_logits[None], mask[None], max_answer_len
    )
    return None if value == -np.inf else (int(i), int(j), float(value))


def _probabilities(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    shifted = np.where(allowed, logits - logits[allowed].max(), -np.inf)
    exp = np.exp(shifted)
    return exp / float(exp.sum())


def extract_answers(
    contexts: Sequence[str],
    windows: Sequence[Window],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    settings: SpanSettings,
) -> list[Answer | None]:
    """One answer per pair (None for a pair without windows) from the (windows, tokens)
    logits of all its batch's windows, in window order (padding past each window's length
    is ignored). The best span over a pair's windows wins; the first window on ties."""
    count, width = start_logits.shape
    mask = np.zeros((count, width), dtype=bool)
    for row, window in enumerate(windows):
        mask[row, : len(window)] = window.context_mask
    span_start, span_end, span_value = best_spans(
        start_logits, end_logits, mask, settings.max_answer_len
    )
    null_value = start_logits[:, _NULL_INDEX] + end_logits[:, _NULL_INDEX]
    best: dict[int, int] = {}  # item -> window with the best span
    null: dict[int, int] = {}  # item -> window with the lowest null score
    for row, window in enumerate(windows):
        item = window.item
        if item not in best or span_value[row] > span_value[best[item]]:
            best[item] = row
        if item not in null or null_value[row] < null_value[null[item]]:
            null[item] = row
    answers: list[Answer | None] = [None] * len(contexts)
    for item, row in best.items():
        value = span_value[row]
        impossible = value == -np.inf or (
            settings.allow_impossible and null_value[null[item]] - value > settings.null_threshold
        )
        if impossible:
            w = null[item]
            probs_s, probs_e = _window_probabilities(windows[w], start_logits[w], end_logits[w])
            score = float(probs_s[_NULL_INDEX] * probs_e[_NULL_INDEX])
            answers[item] = Answer("", score, -1, -1, True)
            continue
        i, j = int(span_start[row]), int(span_end[row])
        probs_s, probs_e = _window_probabilities(windows[row], start_logits[row], end_logits[row])
        offsets = windows[row].offsets
        start_char, end_char = int(offsets[i][0]), int(offsets[j][1])
        answers[item] = Answer(
            text=contexts[item][start_char:end_char],
            score=float(probs_s[i] * probs_e[j]),
            start_char=start_char,
            end_char=end_char,
            is_impossible=False,
        )
    return answers


def extract_answer(
    context: str,
    windows: Sequence[Window],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    settings: SpanSettings,
) -> Answer:
    """The answer for one pair from its windows' logits (each trimmed to its window length)."""
    if not windows:
        raise ValueError("extract_answer needs at least one window")
    width = max(len(w) for w in windows)
    starts = np.zeros((len(windows), width), dtype=np.float32)
    ends = np.zeros((len(windows), width), dtype=np.float32)
    for row, (s, e) in enumerate(zip(start_logits, end_logits, strict=True)):
        starts[row, : len(s)] = s
        ends[row, : len(e)] = e
    solo = [replace(w, item=0) for w in windows]
    (answer,) = extract_answers([context], solo, starts, ends, settings)
    assert answer is not None
    return answer


def _window_probabilities(
    window: Window, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = len(window)
    allowed = window.context_mask.copy()
    allowed[_NULL_INDEX] = True
    return _probabilities(start[:n], allowed), _probabilities(end[:n], allowed)
