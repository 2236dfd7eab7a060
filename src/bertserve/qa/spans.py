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

    Every candidate's sum is laid out by (row, length, start), so one argmax per row finds
    the best, and the first of equal sums is the shorter span, then the earlier start."""
    rows, n = start_logits.shape
    lengths = max(1, min(max_answer_len, n))
    best_start = np.zeros(rows, dtype=np.int64)
    best_end = np.zeros(rows, dtype=np.int64)
    best = np.full(rows, -np.inf, dtype=np.result_type(start_logits, end_logits))
    # Rows in groups, so the candidates (rows x lengths x tokens) stay a few MB.
    step = max(1, (1 << 21) // (lengths * max(n, 1)))
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        starts = np.where(mask[lo:hi], start_logits[lo:hi], -np.inf)
        ends = np.full((hi - lo, n + lengths), -np.inf, dtype=starts.dtype)
        ends[:, :n] = np.where(mask[lo:hi], end_logits[lo:hi], -np.inf)
        # shifted[r, k, i] = ends[r, i + k]: the end of the span of k + 1 tokens from i
        row_stride, item = ends.strides
        shifted = np.lib.stride_tricks.as_strided(
            ends, (hi - lo, lengths, n), (row_stride, item, item), writeable=False
        )
        sums = (starts[:, None, :] + shifted).reshape(hi - lo, -1)
        at = sums.argmax(axis=1)
        length, start = np.divmod(at, n)
        best_start[lo:hi] = start
        best_end[lo:hi] = start + length
        best[lo:hi] = sums[np.arange(hi - lo), at]
    return best_start, best_end, best


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, mask: np.ndarray, max_answer_len: int
) -> tuple[int, int, float] | None:
    """Best (start, end, logit sum) with both ends where `mask` is true; None if there is none."""
    (i,), (j,), (value,) = best_spans(
        start_logits[None], end_logits[None], mask[None], max_answer_len
    )
    return None if value == -np.inf else (int(i), int(j), float(value))


def _log_normalizers(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """log(sum(exp(logits))) of each row over its allowed positions."""
    masked = np.where(allowed, logits, -np.inf)
    top = masked.max(axis=1, keepdims=True)
    normalizers: np.ndarray = np.log(np.exp(masked - top).sum(axis=1)) + top[:, 0]
    return normalizers.astype(np.float64)


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
    if not windows:
        return [None] * len(contexts)
    width = start_logits.shape[1]
    context = np.array([(w.context.start, w.context.stop) for w in windows], dtype=np.int64)
    columns = np.arange(width)
    mask = (columns >= context[:, :1]) & (columns < context[:, 1:])
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
    # Each answer's window (the null answer's where it wins) and the token pair it scores.
    items = list(best)
    impossible = [
        span_value[best[item]] == -np.inf
        or (
            settings.allow_impossible
            and null_value[null[item]] - span_value[best[item]] > settings.null_threshold
        )
        for item in items
    ]
    rows = np.array([null[i] if no else best[i] for i, no in zip(items, impossible, strict=True)])
    first = np.where(impossible, _NULL_INDEX, span_start[rows])
    last = np.where(impossible, _NULL_INDEX, span_end[rows])
    # score: softmax over the window's context and [CLS], start times end
    allowed = mask[rows] | (columns == _NULL_INDEX)
    log_score = (
        start_logits[rows, first]
        - _log_normalizers(start_logits[rows], allowed)
        + end_logits[rows, last]
        - _log_normalizers(end_logits[rows], allowed)
    )
    answers: list[Answer | None] = [None] * len(contexts)
    for k, item in enumerate(items):
        score = float(np.exp(log_score[k]))
        if impossible[k]:
            answers[item] = Answer("", score, -1, -1, True)
            continue
        start_char, end_char = windows[rows[k]].char_span(int(first[k]), int(last[k]))
        answers[item] = Answer(
            text=contexts[item][start_char:end_char],
            score=score,
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
