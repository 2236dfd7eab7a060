from __future__ import annotations

import numpy as np
import pytest

from bertserve.errors import InvalidInput
from bertserve.qa.texts import TextLimits, decode_pairs, decode_text

LIMITS = TextLimits(max_question_bytes=64, max_context_bytes=256)


def _pairs(questions: list[object], contexts: list[object]) -> dict[str, np.ndarray]:
    return {
        "question": np.array(questions, dtype=object).reshape(-1, 1),
        "context": np.array(contexts, dtype=object).reshape(-1, 1),
    }


def test_decodes_utf8_bytes_and_str() -> None:
    questions, contexts = decode_pairs(
        _pairs([b"Qui?", "Wo?"], ["caf\u00e9".encode(), "ok"]), LIMITS
    )
    assert questions == ["Qui?", "Wo?"]
    assert contexts == ["caf\u00e9", "ok"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "input 'context' item 1 is empty"),
        (b"  \n\t", "input 'context' item 1 is empty"),
        (b"\xff\xfe oops", "input 'context' item 1 is not valid UTF-8 (byte 0)"),
        (b"x" * 257, "input 'context' item 1 is 257 bytes; this model accepts at most 256"),
        (3, "input 'context' item 1: expected BYTES text, got int"),
    ],
)
def test_bad_context_names_input_and_item(value: object, message: str) -> None:
    with pytest.raises(
        InvalidInput, match=message.replace("?", r"\?").replace("(", r"\(").replace(")", r"\)")
    ):
        decode_pairs(_pairs([b"q", b"q"], [b"fine", value]), LIMITS)


def test_empty_question_is_refused() -> None:
    with pytest.raises(InvalidInput, match="input 'question' item 0 is empty"):
        decode_pairs(_pairs([b""], [b"text"]), LIMITS)


def test_mismatched_counts_are_refused() -> None:
    inputs = {
        "question": np.array([[b"a"], [b"b"]], dtype=object),
        "context": np.array([[b"c"]], dtype=object),
    }
    with pytest.raises(InvalidInput, match="'question' has 2 items but input 'context' has 1"):
        decode_pairs(inputs, LIMITS)


def test_missing_input_is_refused() -> None:
    with pytest.raises(InvalidInput, match="input 'context' is missing"):
        decode_pairs({"question": np.array([[b"a"]], dtype=object)}, LIMITS)


def test_limit_counts_bytes_not_characters() -> None:
    assert decode_text("\u00e9" * 32, "question", 0, 64) == "\u00e9" * 32
    with pytest.raises(InvalidInput, match="66 bytes"):
        decode_text("\u00e9" * 33, "question", 0, 64)
