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
    #: Which cells of the requests' [rows, width] blocks, laid back to back, hold real
    #: tokens; None when every row is full.
    keep: np.ndarray | None = None

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

    The whole batch is one concatenation per input and one selection, not a selection per
    request: numpy gives the GIL up inside every call over a few hundred elements, and an
    instance thread that does so once per request waits behind the event loop to take it
    back each time (10 ms a batch of 64 four-row requests on an H200 host, against 0.35 ms
    of work: py-spy found the instance threads in these per-request calls)."""
    names = [n for n in requests[0] if n != spec.length_input]
    spans: list[_Span] = []
    lengths: list[np.ndarray] = []
    for i, inputs in enumerate(requests):
        rows, width = _width(inputs)
        trimmed = row_lengths(inputs, spec) if known is None else known[i]
        spans.append(_Span(rows, width, trimmed))
        lengths.append(np.full(rows, width, dtype=np.int64) if trimmed is None else trimmed)
    flat = {n: _joined([np.asarray(r[n]).reshape(-1) for r in requests]) for n in names}
    row_tokens = _joined(lengths)
    if all(span.lengths is None for span in spans):
        return PackedBatch(flat, row_tokens, tuple(spans))
    keep = _real_cells(spans, row_tokens)
    return PackedBatch({n: a[keep] for n, a in flat.items()}, row_tokens, tuple(spans), keep)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _real_cells(spans: Sequence[_Span], row_tokens: np.ndarray) -> np.ndarray:
    """Mask over every request's [rows, width] cells, back to back: the real tokens."""
    widths = np.repeat([s.width for s in spans], [s.rows for s in spans])  # per row
    first = np.cumsum(widths) - widths  # each row's first cell
    position = np.arange(int(widths.sum())) - np.repeat(first, widths)
    keep: np.ndarray = position < np.repeat(row_tokens, widths)
    return keep


def unpack(
    outputs: Mapping[str, np.ndarray], batch: PackedBatch, fill: float
) -> list[dict[str, np.ndarray]]:
    """Per-token outputs (tokens, ...) -> each request's outputs [rows, width, ...]: views
    of `outputs` where no row was trimmed, else of one block per output filled at once."""
    results: list[dict[str, np.ndarray]] = [{} for _ in batch.spans]
    for name, flat in outputs.items():
        cells = flat
        if batch.keep is not None:
            cells = np.full((len(batch.keep), *flat.shape[1:]), fill, dtype=flat.dtype)
            cells[batch.keep] = flat
        start = 0
        for part, span in zip(results, batch.spans, strict=True):
            count = span.rows * span.width
            part[name] = cells[start : start + count].reshape(
                (span.rows, span.width, *flat.shape[1:])
            )
            start += count
    return results
