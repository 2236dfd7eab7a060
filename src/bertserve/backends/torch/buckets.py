"""Batch and sequence buckets: pure arithmetic the instance and the tests share."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_SEQ_BUCKETS", "default_batch_buckets", "pick_bucket", "plan_chunks"]

DEFAULT_SEQ_BUCKETS = (128, 384)


def default_batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of four up to max_batch_size, plus max_batch_size: 4 -> (1, 4), as the
    reference's TensorRT profiles; 256 -> (1, 4, 16, 64, 256)."""
    top = max(1, max_batch_size)
    out = []
    b = 1
    while b < top:
        out.append(b)
        b *= 4
    out.append(top)
    return tuple(out)


def pick_bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n; the largest if none is."""
    for b in sorted(buckets):
        if b >= n:
            return b
    return max(buckets)


def plan_chunks(n: int, buckets: Sequence[int]) -> list[tuple[int, int, int]]:
    """Split n rows into (start, stop, bucket) pieces: full largest buckets first, then the
    remainder padded to the smallest bucket that holds it."""
    top = max(buckets)
    chunks = []
    start = 0
    while n - start > top:
        chunks.append((start, start + top, top))
        start += top
    if n > start:
        chunks.append((start, n, pick_bucket(n - start, buckets)))
    return chunks
