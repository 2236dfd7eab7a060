"""Batch and sequence buckets: pure arithmetic the instance and the tests share."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "DEFAULT_SEQ_BUCKETS",
    "MIN_ROW_TOKENS",
    "default_batch_buckets",
    "default_token_buckets",
    "pick_bucket",
    "pick_token_bucket",
    "plan_chunks",
    "plan_token_chunks",
    "row_capacity",
]

DEFAULT_SEQ_BUCKETS = (128, 384)
#: A token bucket of T tokens holds up to T // MIN_ROW_TOKENS rows (the variable-length
#: attention kernel launches work for every row slot, used or not); shorter rows still run,
#: in a larger bucket.
MIN_ROW_TOKENS = 16


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


def default_token_buckets(max_tokens: int) -> tuple[int, ...]:
    """Token counts of packed-batch graphs: 128, 256, 384, then 2^k and 1.5 x 2^k up to
    max_tokens, so a batch computes at most 1/3 slack tokens; and the top octave (half the
    budget up to all of it) in sixteenths of the budget, because a batch may end short of the
    budget by less than the batcher splits a request for (a sixteenth: Scheduler._split, and
    single-row requests are never split) and should not compute the full budget's tokens."""
    top = max(128, max_tokens)
    sizes = {128, 256, 384}
    b = 512
    while b < top:
        sizes |= {b, b * 3 // 2}
        b *= 2
    if top >= 2048:  # (multiples of 64: GEMM-friendly row counts)
        sizes |= {(top // 2 + k * (top // 16)) // 64 * 64 for k in range(8)}
    return tuple(s for s in sorted(sizes) if s < top) + (top,)


def row_capacity(tokens: int, max_rows: int) -> int:
    """Rows a token bucket holds."""
    return max(1, min(max_rows, tokens // MIN_ROW_TOKENS))


def pick_token_bucket(tokens: int, rows: int, buckets: Sequence[int], max_rows: int) -> int:
    """The smallest bucket that holds `tokens` tokens in `rows` rows; the largest if none."""
    for b in sorted(buckets):
        if b >= tokens and row_capacity(b, max_rows) >= rows:
            return b
    return max(buckets)


def plan_token_chunks(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[range]:
    """Split rows (their token counts, each <= max_tokens) into consecutive pieces of at most
    max_tokens tokens and max_rows rows."""
    chunks: list[range] = []
    start = tokens = 0
    for i, n in enumerate(lengths):
        if i > start and (tokens + n > max_tokens or i - start >= max_rows):
            chunks.append(range(start, i))
            start, tokens = i, 0
        tokens += n
    if len(lengths) > start:
        chunks.append(range(start, len(lengths)))
    return chunks
