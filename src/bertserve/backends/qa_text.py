"""A QA pipeline instance's text work, in two halves around its calls to the QA model.

`prepare` turns a batch's question and context texts into the QA model's calls: the texts
decoded and checked, tokenized into windows, the windows grouped by length bucket and padded
(one feed a call). `answer` turns the calls' start and end logits into one answer a pair.
Between the two the instance sends the feeds to the QA model and waits; the batch's windows
stay here meanwhile, so the logits are all that comes back.

Both halves run where the instance says: on the instance's own thread, in the engine's
process, or in a process of the instance's own (`backends/qa_process.py`), where this work
takes none of the engine's GIL. One `TextWork` serves one batch at a time, as an instance
runs one batch at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bertserve.backends.qa_settings import PipelineSettings
from bertserve.errors import InternalError
from bertserve.qa.buckets import ModelCall, pad_windows, plan_calls
from bertserve.qa.spans import Answer, extract_answers
from bertserve.qa.texts import decode_pairs
from bertserve.qa.windows import Window, Windower

__all__ = ["NO_TOKENS_ANSWER", "Logits", "TextWork"]

#: The answer of a pair whose context holds no token (e.g. only zero-width characters).
NO_TOKENS_ANSWER = Answer("", 0.0, -1, -1, True)

#: One call's (start, end) logits, [windows of the call, its bucket length] each.
Logits = tuple[np.ndarray, np.ndarray]


@dataclass(slots=True)
class _Batch:
    contexts: list[str]
    windows: list[Window]
    calls: list[ModelCall]


class TextWork:
    def __init__(self, settings: PipelineSettings, windower: Windower) -> None:
        self.settings = settings
        self.windower = windower
        self._batch: _Batch | None = None

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """The QA model's inputs of every call this batch needs (none when no pair has a
        token), in the order `answer` takes their logits. Raises InvalidInput for a text
        the pipeline refuses (`qa/texts.py`)."""
        questions, contexts = decode_pairs(inputs, self.settings.limits)
        return self.prepare_texts(questions, contexts)

    def prepare_texts(
        self, questions: Sequence[str], contexts: Sequence[str]
    ) -> list[dict[str, np.ndarray]]:
        """`prepare` for texts already decoded."""
        s = self.settings
        windows = self.windower.split(questions, contexts)
        calls = plan_calls([len(w) for w in windows], s.buckets, s.max_windows_per_call)
        self._batch = _Batch(list(contexts), windows, calls)
        feeds = []
        for call in calls:
            padded = pad_windows([windows[i] for i in call.windows], call.length)
            feeds.append({name: padded[name] for name in s.qa_inputs})
        return feeds

    def answer(self, logits: Sequence[Logits]) -> list[Answer]:
        """One answer a pair of the prepared batch, from its calls' logits."""
        batch, self._batch = self._batch, None
        if batch is None:
            raise InternalError("the QA pipeline was given logits for a batch it never prepared")
        if len(logits) != len(batch.calls):
            raise InternalError(
                f"the QA pipeline prepared {len(batch.calls)} model calls but was given the "
                f"logits of {len(logits)}"
            )
        width = max((len(w) for w in batch.windows), default=0)
        starts = np.zeros((len(batch.windows), width), dtype=np.float32)
        ends = np.zeros((len(batch.windows), width), dtype=np.float32)
        for call, (start, end) in zip(batch.calls, logits, strict=True):
            rows = np.asarray(call.windows)
            cut = min(call.length, width)
            starts[rows, :cut] = start[:, :cut]
            ends[rows, :cut] = end[:, :cut]
        answers = extract_answers(batch.contexts, batch.windows, starts, ends, self.settings.spans)
        return [NO_TOKENS_ANSWER if a is None else a for a in answers]

    def answer_columns(self, logits: Sequence[Logits]) -> dict[str, np.ndarray]:
        """`answer` as the pipeline's outputs, one item a pair (flat)."""
        answers = self.answer(logits)
        return {
            "answer": np.array([a.text.encode("utf-8") for a in answers], dtype=object),
            "score": np.array([a.score for a in answers], dtype=np.float32),
            "start_char": np.array([a.start_char for a in answers], dtype=np.int64),
            "end_char": np.array([a.end_char for a in answers], dtype=np.int64),
            "is_impossible": np.array([a.is_impossible for a in answers], dtype=bool),
        }
