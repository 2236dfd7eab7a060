"""Sequence-length bucketing: pad each model call only to the smallest bucket that fits it.

Padding every window to 384 tokens wastes most of the compute on SQuAD-like passages; padding
to the exact longest member gives every call a new shape, which defeats the model's dynamic
batcher (it merges only equal shapes). A few fixed lengths keep both costs down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bertserve.qa.windows import Window

__all__ = ["ModelCall", "bucket_for", "plan_calls", "pad_windows"]


@dataclass(frozen=True, slots=True)
class ModelCall:
    """Windows (indices into the batch's window list) sent together, padded to `length`."""

    length: int
    windows: tuple[int, ...]


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    for bucket in buckets:
        if length <= bucket:
            return bucket
    raise ValueError(f"length {length} exceeds the largest bucket {buckets[-1]}")


def plan_calls(lengths: Sequence[int], buckets: Sequence[int], max_windows: int) -> list[ModelCall]:
    """Group windows by bucket, at most `max_windows` a call, shortest bucket first."""
    by_bucket: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        by_bucket.setdefault(bucket_for(length, buckets), []).append(index)
    calls: list[ModelCall] = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        for start in range(0, len(members), max_windows):
            calls.append(ModelCall(bucket, tuple(members[start : start + max_windows])))
    return calls


def pad_windows(windows: Sequence[Window], length: int) -> dict[str, np.ndarray]:
    """BERT inputs [len(windows), length], int64, zero-padded, attention mask marking tokens."""
    count = len(windows)
    input_ids = np.zeros((count, length), dtype=np.int64)
    token_type_ids = np.zeros((count, length), dtype=np.int64)
    attention_mask = np.zeros((count, length), dtype=np.int64)
    for row, window in enumerate(windows):
        n = len(window)
        input_ids[row, :n] = window.input_ids
        token_type_ids[row, :n] = window.token_type_ids
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
    }
