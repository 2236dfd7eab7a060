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
from dataclasses import dataclass

import numpy as np

from bertserve.qa.windows import Window

__all__ = ["SpanSettings", "Answer", "best_span", "extract_answer"]

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


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, mask: np.ndarray, max_answer_len: int
) -> tuple[int, int, float] | None:
    """Best (start, end, logit sum) with both ends where `mask` is true; None if there is none.

    Scans each span length as one vector operation, so it costs O(n * max_answer_len)."""
    n = len(start_logits)
    best: tuple[int, int, float] | None = None
    for length in range(min(max_answer_len, n)):
        valid = mask[: n - length] & mask[length:]
        if not valid.any():
            continue
        sums = np.where(valid, start_logits[: n - length] + end_logits[length:], -np.inf)
        start = int(np.argmax(sums))
        value = float(sums[start])
        if best is None or value > best[2]:
            best = (start, start + length, value)
    return best


def _probabilities(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    shifted = np.where(allowed, logits - logits[allowed].max(), -np.inf)
    exp = np.exp(shifted)
    return exp / exp.sum()


def extract_answer(
    context: str,
    windows: Sequence[Window],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    settings: SpanSettings,
) -> Answer:
    """The answer for one pair from its windows' logits (each trimmed to its window length)."""
    best: tuple[int, int, int, float] | None = None  # window, start, end, logit
    null: tuple[int, float] | None = None  # window, logit
    for w, (window, start, end) in enumerate(zip(windows, start_logits, end_logits, strict=True)):
        span = best_span(start, end, window.context_mask, settings.max_answer_len)
        if span is not None and (best is None or span[2] > best[3]):
            best = (w, span[0], span[1], span[2])
        null_logit = float(start[_NULL_INDEX] + end[_NULL_INDEX])
        if null is None or null_logit < null[1]:
            null = (w, null_logit)
    if null is None:
        raise ValueError("extract_answer needs at least one window")
    impossible = best is None or (
        settings.allow_impossible and null[1] - best[3] > settings.null_threshold
    )
    if impossible:
        w = null[0]
        probs_s, probs_e = _window_probabilities(windows[w], start_logits[w], end_logits[w])
        score = float(probs_s[_NULL_INDEX] * probs_e[_NULL_INDEX])
        return Answer("", score, -1, -1, True)
    assert best is not None
    w, i, j, _ = best
    probs_s, probs_e = _window_probabilities(windows[w], start_logits[w], end_logits[w])
    offsets = windows[w].offsets
    start_char, end_char = int(offsets[i][0]), int(offsets[j][1])
    return Answer(
        text=context[start_char:end_char],
        score=float(probs_s[i] * probs_e[j]),
        start_char=start_char,
        end_char=end_char,
        is_impossible=False,
    )


def _window_probabilities(
    window: Window, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    allowed = window.context_mask.copy()
    allowed[_NULL_INDEX] = True
    return _probabilities(start, allowed), _probabilities(end, allowed)
