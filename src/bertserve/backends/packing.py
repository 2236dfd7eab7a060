"""Variable-length batching: the rows of several requests packed into one token stream.

A model that packs (Triton's `allow_ragged_batch` on its inputs) computes real tokens only.
Requests with different sequence lengths join one batch; each row is trimmed to its
attention mask (right padding: ones, then zeros), and the backend receives every row's
tokens back to back with the row lengths, instead of a [rows, width] block padded to the
longest. Its per-token outputs are cut back into each request's [rows, width] shape;
positions past a row's mask were never computed and read `PackingSpec.fill`.

Pure numpy, part of the backend interface: the scheduler packs, a backend (the GPU
engine) consumes `PackedBatch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bertserve.errors import InvalidInput

__all__ = ["PackedBatch", "PackingSpec", "pack", "row_lengths", "unpack"]


@dataclass(frozen=True, slots=True)
class PackingSpec:
    """What a packing instance tells the scheduler: the budget of one batch and which
    input trims rows."""

    max_tokens: int  # real tokens in one batch (the backend's largest token bucket)
    max_rows: int  # rows (sequences) in one batch
    length_input: str | None = None  # e.g. "attention_mask"; None: every row is full width
    #: What outputs read at positions past a row's mask (a logit that never wins a softmax).
    fill: float = -10000.0


@dataclass(frozen=True, slots=True)
class _Span:
    """One request's place in the packed stream."""

    rows: int
    width: int
    lengths: np.ndarray | None  # per-row lengths when some row is trimmed, else None


@dataclass(frozen=True, slots=True)
class PackedBatch:
    """Rows of several requests, their real tokens back to back."""

    #: input name -> (tokens,) array; the length input itself is not included
    tokens: dict[str, np.ndarray]
    lengths: np.ndarray  # (rows,) int64, tokens of each row in order
    positions: np.ndarray  # (tokens,) int64, each token's index in its row
    spans: tuple[_Span, ...]

    @property
    def total_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def rows(self) -> int:
        return len(self.lengths)


def _width(inputs: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(rows, width) that every input of one request shares."""
    shapes = {name: np.shape(a) for name, a in inputs.items()}
    first = next(iter(shapes.values()))
    for name, shape in shapes.items():
        if len(shape) != 2:
            raise InvalidInput(
                f"input '{name}' has shape {list(shape)}; a model that packs sequences takes "
                "[batch, tokens]"
            )
        if shape != first:
            raise InvalidInput(
                f"inputs disagree on their shape: '{name}' has {list(shape)}, another input "
                f"has {list(first)}; send every input as [batch, tokens] of the same size"
            )
    return first[0], first[1]


def row_lengths(inputs: Mapping[str, np.ndarray], spec: PackingSpec) -> np.ndarray | None:
    """Per-row token counts of one request from its mask, or None when every row is full.

    Raises InvalidInput for a mask that is not right-padded (a zero before a one): such a
    row cannot be trimmed to a prefix."""
    if spec.length_input is None or spec.length_input not in inputs:
        return None
    # Three passes over the mask (this runs on the event loop for every request): a row is
    # right-padded exactly when its count of ones is where its first zero is.
    real = np.asarray(inputs[spec.length_input]) != 0
    if real.ndim != 2:
        return None  # not [rows, width]: pack refuses it by name
    lengths: np.ndarray = real.sum(axis=1)
    width = real.shape[1]
    if not len(lengths) or int(lengths.min()) == width:
        return None
    first_zero = real.argmin(axis=1)
    if not np.all((first_zero == lengths) | (lengths == width)):
        raise InvalidInput(
            f"input '{spec.length_input}' must be right-padded (ones, then zeros) on a model "
            "that packs sequences: move each row's padding to its end"
        )
    return lengths.astype(np.int64)


def pack(
    requests: Sequence[Mapping[str, np.ndarray]],
    spec: PackingSpec,
    known: Sequence[np.ndarray | None] | None = None,
) -> PackedBatch:
    """Pack requests (each input [rows, width], widths differing between requests).
    `known`: each request's `row_lengths`, where the caller computed them already.

    A trimmed request is copied row by row. Each copy is a few hundred elements, below the
    size at which numpy gives the GIL up, so packing holds the GIL from start to end: a
    thread that runs it beside a busy event loop is not sent to the back of the GIL's queue
    at every call (24 four-row requests on an H200 host, Python 3.12, numpy 2.5: 3.8-4.0 ms
    beside one busy thread as whole-batch passes, 0.8-0.9 ms row by row; alone both ~0.4
    ms; benchmarks/pack_gil.py)."""
    names = [n for n in requests[0] if n != spec.length_input]
    spans: list[_Span] = []
    for i, inputs in enumerate(requests):
        rows, width = _width(inputs)
        trimmed = row_lengths(inputs, spec) if known is None else known[i]
        spans.append(_Span(rows, width, trimmed))
    row_tokens = _joined(
        [np.full(s.rows, s.width, np.int64) if s.lengths is None else s.lengths for s in spans]
    )
    total = int(row_tokens.sum())
    flat = {n: np.empty(total, dtype=np.asarray(requests[0][n]).dtype) for n in names}
    positions = np.empty(total, dtype=np.int64)
    counting = _counting(max((s.width for s in spans), default=0))
    start = 0
    for inputs, span in zip(requests, spans, strict=True):
        arrays = [(flat[n], np.asarray(inputs[n])) for n in names]
        if span.lengths is None:  # every row full: one copy of the whole block
            end = start + span.rows * span.width
            for out, array in arrays:
                out[start:end] = array.reshape(-1)
            positions[start:end].reshape(span.rows, span.width)[:] = counting[: span.width]
            start = end
            continue
        for row, length in enumerate(span.lengths.tolist()):
            end = start + length
            for out, array in arrays:
                out[start:end] = array[row, :length]
            positions[start:end] = counting[:length]
            start = end
    return PackedBatch(flat, row_tokens, positions, tuple(spans))


_COUNTING = np.arange(512, dtype=np.int64)


def _counting(width: int) -> np.ndarray:
    """0, 1, 2, ... at least `width` long (shared: a row's positions are a copy of its start)."""
    global _COUNTING
    if len(_COUNTING) < width:
        _COUNTING = np.arange(width, dtype=np.int64)
    return _COUNTING


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def unpack(
    outputs: Mapping[str, np.ndarray], batch: PackedBatch, fill: float
) -> list[dict[str, np.ndarray]]:
    """Per-token outputs (tokens, ...) -> each request's outputs [rows, width, ...]: views of
    `outputs` for a request with every row full, else a block that reads `fill` past each
    row's mask, written row by row (as `pack`, without giving the GIL up: no pass over a
    whole batch, not even a fill)."""
    results: list[dict[str, np.ndarray]] = [{} for _ in batch.spans]
    for name, flat in outputs.items():
        rest = flat.shape[1:]
        start = 0
        for part, span in zip(results, batch.spans, strict=True):
            shape = (span.rows, span.width, *rest)
            if span.lengths is None:
                end = start + span.rows * span.width
                part[name] = flat[start:end].reshape(shape)
                start = end
                continue
            block = np.empty(shape, dtype=flat.dtype)
            for row, length in enumerate(span.lengths.tolist()):
                block[row, :length] = flat[start : start + length]
                block[row, length:] = fill
                start += length
            part[name] = block
    return results
