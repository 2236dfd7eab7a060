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
    """One model input row: `item` is the index of the question/context pair it came from."""

    item: int
    input_ids: np.ndarray  # int64 [n]
    token_type_ids: np.ndarray  # int64 [n]
    context_mask: np.ndarray  # bool [n]: token belongs to the context
    offsets: np.ndarray  # int64 [n, 2]: character span of each token in the context

    def __len__(self) -> int:
        return len(self.input_ids)


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
        self._check_template()

    @classmethod
    def from_file(cls, path: Path, settings: WindowSettings) -> Windower:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception
            raise ConfigError(f"cannot read tokenizer '{path}': {exc}") from None
        return cls(tokenizer, settings)

    def _check_template(self) -> None:
        probe = self._pairs.encode("a", "b")
        seq = probe.sequence_ids
        if not seq or seq[0] is not None or 1 not in seq:
            raise ConfigError(
                "the tokenizer has no pair template ([CLS] A [SEP] B [SEP]): use a tokenizer.json "
                "saved from a BERT-style fast tokenizer"
            )

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
                window = _to_window(item, enc)
                if window.context_mask.any():
                    windows.append(window)
        return windows


def _to_window(item: int, enc: Encoding) -> Window:
    # sequence_ids is None for special tokens: as floats those become NaN, never 1, so the
    # context mask is one vector comparison instead of a Python loop over tokens.
    sequence = np.array(enc.sequence_ids, dtype=np.float64)
    return Window(
        item=item,
        input_ids=np.asarray(enc.ids, dtype=np.int64),
        token_type_ids=np.asarray(enc.type_ids, dtype=np.int64),
        context_mask=sequence == 1,
        offsets=np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2),
    )
