"""Question + context -> model windows: fast batched tokenization with character offsets.

A context longer than one window is split into several that overlap by `doc_stride` tokens
(Hugging Face's meaning of the word: the overlap, not the step), each repeating the question.
Questions longer than `max_query_len` tokens are cut there, as BERT's run_squad does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from bertserve.errors import ConfigError

__all__ = ["WindowSettings", "Window", "Windower"]

# [CLS] question [SEP] context [SEP]
_SPECIAL_TOKENS_IN_PAIR = 3


@dataclass(frozen=True, slots=True)
class WindowSettings:
    """How texts become windows (token counts include the special tokens)."""

    max_seq_len: int = 384
    doc_stride: int = 128
    max_query_len: int = 64

    def __post_init__(self) -> None:
        if self.max_query_len < 1:
            raise ConfigError(f"max_query_len must be at least 1, got {self.max_query_len}")
        room = self.max_seq_len - self.max_query_len - _SPECIAL_TOKENS_IN_PAIR
        if room < 1:
            raise ConfigError(
                f"max_seq_len {self.max_seq_len} leaves no room for context after a "
                f"{self.max_query_len}-token question: raise max_seq_len or lower max_query_len"
            )
        if not 0 <= self.doc_stride < room:
            raise ConfigError(
                f"doc_stride {self.doc_stride} must be at least 0 and below the {room} context "
                f"tokens a window holds (max_seq_len - max_query_len - 3)"
            )


@dataclass(frozen=True, slots=True)
class Window:
    """One model input row: `item` is the index of the question/context pair it came from.

    The context is the contiguous token range `context` (question, specials and padding lie
    outside it). Character offsets come from `source`, the tokenizer's encoding, only when
    asked for: a pair has many windows and one answer, and turning every token's offsets
    into Python tuples cost more than the rest of the window together."""

    item: int
    input_ids: np.ndarray  # int64 [n]
    token_type_ids: np.ndarray  # int64 [n]
    context: range  # positions of the context's tokens
    source: Encoding | np.ndarray  # the encoding, or the offsets themselves (int64 [n, 2])

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def context_mask(self) -> np.ndarray:
        """bool [n]: the token belongs to the context."""
        mask = np.zeros(len(self), dtype=bool)
        mask[self.context.start : self.context.stop] = True
        return mask

    @property
    def offsets(self) -> np.ndarray:
        """int64 [n, 2]: each token's character span in the context."""
        if isinstance(self.source, np.ndarray):
            return self.source
        return np.asarray(self.source.offsets, dtype=np.int64).reshape(-1, 2)

    def char_span(self, first: int, last: int) -> tuple[int, int]:
        """Characters [start, end) of the context covered by tokens first..last."""
        if isinstance(self.source, np.ndarray):
            return int(self.source[first, 0]), int(self.source[last, 1])
        start = self.source.token_to_chars(first)
        end = self.source.token_to_chars(last)
        assert start is not None and end is not None  # context tokens have offsets
        return start[0], end[1]


class Windower:
    """Splits question/context pairs into windows with one tokenizer (thread-safe to call)."""

    def __init__(self, tokenizer: Tokenizer, settings: WindowSettings) -> None:
        self.settings = settings
        # Two copies, configured once: one for bare questions, one for pairs with overflow.
        self._questions = Tokenizer.from_str(tokenizer.to_str())
        self._questions.no_padding()
        self._questions.no_truncation()
        self._pairs = Tokenizer.from_str(tokenizer.to_str())
        self._pairs.no_padding()
        self._pairs.enable_truncation(
            max_length=settings.max_seq_len, stride=settings.doc_stride, strategy="only_second"
        )
        self._types = self._check_template()

    @classmethod
    def from_file(cls, path: Path, settings: WindowSettings) -> Windower:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception
            raise ConfigError(f"cannot read tokenizer '{path}': {exc}") from None
        return cls(tokenizer, settings)

    def _check_template(self) -> tuple[int, int] | None:
        """The token types before and from the context start, when the pair template
        gives every token one of those two (BERT: 0 and 1; RoBERTa: 0 and 0), so windows
        derive their types from the context range; None: read each window's types."""
        probe = self._pairs.encode("a b", "c d")
        seq = probe.sequence_ids
        if not seq or seq[0] is not None or 1 not in seq:
            raise ConfigError(
                "the tokenizer has no pair template ([CLS] A [SEP] B [SEP]): use a tokenizer.json "
                "saved from a BERT-style fast tokenizer"
            )
        start = seq.index(1)
        types = probe.type_ids
        before, after = types[0], types[start]
        if types == [before] * start + [after] * (len(types) - start):
            return before, after
        return None

    def _cut_questions(self, questions: Sequence[str]) -> list[str]:
        limit = self.settings.max_query_len
        cut: list[str] = []
        for text, enc in zip(
            questions,
            self._questions.encode_batch(list(questions), add_special_tokens=False),
            strict=True,
        ):
            cut.append(text[: enc.offsets[limit - 1][1]] if len(enc.ids) > limit else text)
        return cut

    def split(self, questions: Sequence[str], contexts: Sequence[str]) -> list[Window]:
        """Windows of every pair, in item order. A context that yields no token at all (only
        characters the normaliser drops, such as zero-width spaces) yields no window: its
        pair has no answer, and the other pairs of the batch are unaffected."""
        pairs = list(zip(self._cut_questions(questions), contexts, strict=True))
        windows: list[Window] = []
        for item, first in enumerate(self._pairs.encode_batch(pairs)):
            for enc in (first, *first.overflowing):
                window = self._to_window(item, enc)
                if window is not None:
                    windows.append(window)
        return windows

    def _to_window(self, item: int, enc: Encoding) -> Window | None:
        sequence = enc.sequence_ids  # None for special tokens, 0 question, 1 context
        if 1 not in sequence:
            return None
        start = sequence.index(1)
        stop = len(sequence) - sequence[::-1].index(1)
        if self._types is None:
            types = np.asarray(enc.type_ids, dtype=np.int64)
        else:
            types = np.full(len(sequence), self._types[1], dtype=np.int64)
            types[:start] = self._types[0]
        ids = np.asarray(enc.ids, dtype=np.int64)
        return Window(item, ids, types, range(start, stop), enc)
