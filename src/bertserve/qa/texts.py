"""Question and context texts as they arrive in BYTES tensors: decoded and checked per item.

Every check raises `InvalidInput` naming the input and the item, so that a caller validating
one request at a time fails only that request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bertserve.errors import InvalidInput

__all__ = ["TextLimits", "decode_text", "decode_pairs"]


@dataclass(frozen=True, slots=True)
class TextLimits:
    """Largest accepted texts, in UTF-8 bytes. A context of megabytes would tokenize into
    thousands of windows and hold a worker for seconds, so it is refused up front."""

    max_question_bytes: int = 4096
    max_context_bytes: int = 65536


def decode_text(value: object, name: str, index: int, limit: int) -> str:
    """One BYTES element -> str; refuses non-UTF-8, empty (or blank) and oversized texts."""
    where = f"input '{name}' item {index}"
    if isinstance(value, str):
        raw = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise InvalidInput(f"{where}: expected BYTES text, got {type(value).__name__}")
    if len(raw) > limit:
        raise InvalidInput(
            f"{where} is {len(raw)} bytes; this model accepts at most {limit}: "
            "send a shorter text or raise the model's limit in config.pbtxt"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{where} is not valid UTF-8 (byte {exc.start}): encode the text as UTF-8"
        ) from None
    if not text.strip():
        raise InvalidInput(f"{where} is empty: send a non-blank text")
    return text


def _items(inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        array = inputs[name]
    except KeyError:
        raise InvalidInput(
            f"input '{name}' is missing: send both 'question' and 'context'"
        ) from None
    return np.asarray(array, dtype=object).reshape(-1)


def decode_pairs(
    inputs: Mapping[str, np.ndarray], limits: TextLimits
) -> tuple[list[str], list[str]]:
    """`question` and `context` BYTES tensors -> equally long lists of checked texts."""
    questions = _items(inputs, "question")
    contexts = _items(inputs, "context")
    if len(questions) != len(contexts):
        raise InvalidInput(
            f"input 'question' has {len(questions)} items but input 'context' has "
            f"{len(contexts)}: send one context per question"
        )
    if len(questions) == 0:
        raise InvalidInput("input 'question' has no items: send at least one question")
    return (
        [decode_text(v, "question", i, limits.max_question_bytes) for i, v in enumerate(questions)],
        [decode_text(v, "context", i, limits.max_context_bytes) for i, v in enumerate(contexts)],
    )
