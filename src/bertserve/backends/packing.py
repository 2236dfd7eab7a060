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
    given = np.asarray(inputs[spec.length_input])
    if given.all():  # the common case, in one pass: no padding
        return None
    mask = given != 0
    lengths: np.ndarray = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(mask.shape[1]) < lengths[:, None]):
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
    `known`: each request's `row_lengths`, where the caller computed them already."""
    names = [n for n in requests[0] if n != spec.length_input]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    lengths: list[np.ndarray] = []
    spans: list[_Span] = []
    for i, inputs in enumerate(requests):
        rows, width = _width(inputs)
        trimmed = row_lengths(inputs, spec) if known is None else known[i]
        if trimmed is None:
            keep = None
            lengths.append(np.full(rows, width, dtype=np.int64))
        else:
            keep = np.arange(width) < trimmed[:, None]
            lengths.append(trimmed)
        for name in names:
            array = np.asarray(inputs[name])
            parts[name].append(array.reshape(-1) if keep is None else array[keep])
        spans.append(_Span(rows, width, trimmed))
    tokens = {n: p[0] if len(p) == 1 else np.concatenate(p) for n, p in parts.items()}
    return PackedBatch(tokens, np.concatenate(lengths), tuple(spans))


def unpack(
    outputs: Mapping[str, np.ndarray], batch: PackedBatch, fill: float
) -> list[dict[str, np.ndarray]]:
    """Per-token outputs (tokens, ...) -> each request's outputs [rows, width, ...]. Views
    of `outputs` where no row was trimmed."""
    results: list[dict[str, np.ndarray]] = []
    start = 0
    for span in batch.spans:
        count = span.rows * span.width if span.lengths is None else int(span.lengths.sum())
        part: dict[str, np.ndarray] = {}
        for name, flat in outputs.items():
            piece = flat[start : start + count]
            if span.lengths is None:
                part[name] = piece.reshape((span.rows, span.width) + flat.shape[1:])
            else:
                full = np.full((span.rows, span.width) + flat.shape[1:], fill, dtype=flat.dtype)
                full[np.arange(span.width) < span.lengths[:, None]] = piece
                part[name] = full
        results.append(part)
        start += count
    return results
