"""Stack requests into one batch and split a batch's outputs back: pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["ShapeKey", "stack_inputs", "split_outputs", "shape_key"]


#: Each input's name and non-batch shape.
ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]


def shape_key(inputs: Mapping[str, np.ndarray]) -> ShapeKey:
    """What must agree for two requests to share a batch: each input's non-batch shape."""
    return tuple((name, array.shape[1:]) for name, array in inputs.items())


def stack_inputs(requests: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate along the batch axis. One request passes through without a copy."""
    if len(requests) == 1:
        return dict(requests[0])
    return {name: np.concatenate([r[name] for r in requests], axis=0) for name in requests[0]}


def split_outputs(
    outputs: Mapping[str, np.ndarray], sizes: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    """Cut each output along the batch axis into `sizes` pieces (views, no copies)."""
    if len(sizes) == 1:
        return [dict(outputs)]
    parts: list[dict[str, np.ndarray]] = [{} for _ in sizes]
    for name, array in outputs.items():
        start = 0
        for i, size in enumerate(sizes):
            parts[i][name] = array[start : start + size]
            start += size
    return parts
