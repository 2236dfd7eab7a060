"""SQuAD's official exact match and F1, and answer agreement between model variants.

Normalisation and scoring follow the official evaluation scripts (v1.1 and v2.0): lowercase,
drop punctuation, drop the articles a/an/the, collapse whitespace; the best score over the gold
answers counts. An unanswerable question's gold answer is the empty string, so predicting no
answer scores 1 there and any text scores 0. Scores are percentages, as the scripts print them.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bertserve.qa.squad import Example

__all__ = [
    "SquadScores",
    "normalize_answer",
    "exact_match",
    "f1",
    "score_predictions",
    "agreement",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True, slots=True)
class SquadScores:
    """EM and F1 in percent over `total` questions; the HasAns/NoAns parts (SQuAD 2.0) are
    None when the data holds no question of that kind."""

    exact: float
    f1: float
    total: int
    has_ans_exact: float | None = None
    has_ans_f1: float | None = None
    has_ans_total: int = 0
    no_ans_exact: float | None = None
    no_ans_f1: float | None = None
    no_ans_total: int = 0


def _gold(example: Example) -> list[str]:
    # As the v2.0 script: gold answers that normalise to nothing don't count; none left = "".
    golds = [a for a in example.answers if normalize_answer(a)]
    return golds or [""]


def _mean(values: Sequence[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def score_predictions(examples: Sequence[Example], predictions: Mapping[str, str]) -> SquadScores:
    """Official EM/F1 of `predictions` (question id -> answer text, "" = no answer).

    A question without a prediction scores 0, as in the official scripts."""
    ems: dict[bool, list[float]] = {True: [], False: []}
    f1s: dict[bool, list[float]] = {True: [], False: []}
    for example in examples:
        prediction = predictions.get(example.id)
        golds = _gold(example)
        has_answer = golds != [""]
        if prediction is None:
            ems[has_answer].append(0.0)
            f1s[has_answer].append(0.0)
            continue
        ems[has_answer].append(max(exact_match(prediction, g) for g in golds))
        f1s[has_answer].append(max(f1(prediction, g) for g in golds))
    all_em = ems[True] + ems[False]
    all_f1 = f1s[True] + f1s[False]
    return SquadScores(
        exact=_mean(all_em) or 0.0,
        f1=_mean(all_f1) or 0.0,
        total=len(all_em),
        has_ans_exact=_mean(ems[True]),
        has_ans_f1=_mean(f1s[True]),
        has_ans_total=len(ems[True]),
        no_ans_exact=_mean(ems[False]),
        no_ans_f1=_mean(f1s[False]),
        no_ans_total=len(ems[False]),
    )


def agreement(reference: Mapping[str, str], other: Mapping[str, str]) -> float:
    """Percent of the reference's questions that `other` answers with the same normalised text
    (both answering "no answer" counts as the same)."""
    if not reference:
        return 0.0
    same = sum(
        1
        for qid, answer in reference.items()
        if qid in other and normalize_answer(answer) == normalize_answer(other[qid])
    )
    return 100.0 * same / len(reference)
