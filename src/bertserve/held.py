"""numpy over one request's arrays without letting go of the GIL, for the event loop.

numpy lets go of the GIL around every inner loop of more than 500 elements (its
`NPY_BEGIN_THREADS_THRESHOLDED`), and around copies, casts and argmin/argmax at any size. On
the event loop of a server whose instance threads want the GIL, each let-go can be a
hand-over: the loop asks for the GIL back and waits while the requests it has read wait
behind it. One request of four 384-token rows holds 1,536 elements an input, so each plain
reduction over it lets go once; before this module the checks of one such request to a
packing BERT model let go seven times (docs/gpu-notes.md, round 7).

These do the same work in pieces of at most `HELD` elements, each under the GIL, for arrays
of up to `PIECES` pieces; a larger array is reduced in one call, its one let-go shared by its
many rows."""

from __future__ import annotations

import numpy as np

__all__ = ["HELD", "PIECES", "all_below", "right_padded_lengths", "NotRightPadded"]

#: numpy keeps the GIL for an inner loop of at most this many elements
HELD = 500
#: up to this many pieces an array; above, one call (a let-go a few rows pay together)
PIECES = 16

_UNSIGNED = {np.dtype(f"<i{n}"): np.dtype(f"<u{n}") for n in (1, 2, 4, 8)}
_maximum = np.maximum.reduce  # ndarray.max without its Python wrapper: a piece costs ~1 us


class NotRightPadded(ValueError):
    """A mask row with a zero before a nonzero: it cannot be trimmed to a prefix."""

    def __init__(self, row: int) -> None:
        super().__init__(f"row {row} is not right-padded")
        self.row = row


def _pieces(array: np.ndarray) -> list[np.ndarray] | None:
    """Flat views of at most HELD elements each, or None for an array to reduce in one call
    (too large, or not contiguous: flattening it would copy)."""
    if array.size > HELD * PIECES or not array.flags.c_contiguous:
        return None
    flat = array.reshape(-1)
    return [flat[i : i + HELD] for i in range(0, flat.size, HELD)]


def all_below(array: np.ndarray, limit: int) -> bool:
    """Whether every element of an integer array is in 0..limit-1: one maximum over the
    array read as unsigned, where a negative element reads 2**(bits-1) or more."""
    if array.dtype.kind == "i":
        if array.dtype not in _UNSIGNED:
            array = array.astype(array.dtype.newbyteorder("="))  # byte-swapped: a rare copy
        # a limit past the signed maximum holds every nonnegative element: only a negative
        # one (2**(bits-1) or more read unsigned) may fail
        limit = min(limit, 1 << (8 * array.dtype.itemsize - 1))
        array = array.view(_UNSIGNED[array.dtype])
    if not array.size:
        return True
    pieces = _pieces(array)
    if pieces is None:
        return int(array.max()) < limit
    return int(max(map(_maximum, pieces))) < limit


def right_padded_lengths(mask: np.ndarray) -> list[int]:
    """Each row's count of nonzeros for a [rows, width] mask whose rows are nonzeros, then
    zeros. Raises NotRightPadded for the first row that is not."""
    rows, width = mask.shape
    if not width:
        return [0] * rows
    pieces = _pieces(mask)
    if pieces is None:
        return _right_padded_at_once(mask)
    real = b"".join([(piece != 0).tobytes() for piece in pieces])  # one byte a token: 0 or 1
    lengths = []
    for row, start in enumerate(range(0, rows * width, width)):
        first_zero = real.find(0, start, start + width)
        if first_zero < 0:
            lengths.append(width)
            continue
        if real.find(1, first_zero, start + width) >= 0:
            raise NotRightPadded(row)
        lengths.append(first_zero - start)
    return lengths


def _right_padded_at_once(mask: np.ndarray) -> list[int]:
    """right_padded_lengths in whole-array calls: a row is right-padded exactly when its
    count of nonzeros is where its first zero is."""
    real = mask != 0
    lengths = real.sum(axis=1)
    width = mask.shape[1]
    first_zero = real.argmin(axis=1)
    bad = np.flatnonzero((first_zero != lengths) & (lengths != width))
    if len(bad):
        raise NotRightPadded(int(bad[0]))
    return [int(n) for n in lengths.tolist()]
