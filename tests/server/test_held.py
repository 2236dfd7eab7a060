"""The event loop's numpy (`bertserve.held`): a request's mask read into row lengths and its
ids checked against a limit in pieces that keep the GIL, with the answers of whole-array
numpy for every size, dtype and layout, on both sides of the size where the pieces stop."""

from __future__ import annotations

import numpy as np
import pytest

from bertserve.held import HELD, PIECES, NotRightPadded, all_below, right_padded_lengths

#: widths below, at and past numpy's 500, and masks of a few pieces up to past PIECES
WIDTHS = [1, 2, 7, 64, 384, HELD - 1, HELD, HELD + 1, 512, 1000]


def _reference_lengths(mask: np.ndarray) -> list[int] | None:
    """Row lengths by whole-array numpy, None when a row is not right-padded."""
    real = mask != 0
    counts = real.sum(axis=1)
    ordered = [bool(row[: int(n)].all()) for row, n in zip(real, counts, strict=True)]
    return counts.tolist() if all(ordered) else None


def _mask(rng: np.random.Generator, rows: int, width: int, dtype: type) -> np.ndarray:
    lengths = rng.integers(0, width + 1, rows)
    return (np.arange(width)[None, :] < lengths[:, None]).astype(dtype)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.float32])
def test_row_lengths_agree_with_whole_array_numpy(width: int, dtype: type) -> None:
    rng = np.random.default_rng(width)
    for rows in (1, 4, 17, 64):  # 64 x 1000 is past PIECES * HELD: one call
        mask = _mask(rng, rows, width, dtype) * 3  # nonzero, not only one
        assert right_padded_lengths(mask) == _reference_lengths(mask)
        if rows > 1 and width > 1:
            hole = mask.copy()
            row = int(rng.integers(rows))
            hole[row, 0], hole[row, -1] = 0, 1  # a zero before a one in that row
            with pytest.raises(NotRightPadded) as caught:
                right_padded_lengths(hole)
            assert caught.value.row == row  # the other rows are right-padded


def test_row_lengths_of_a_mask_that_is_not_contiguous() -> None:
    rng = np.random.default_rng(5)
    mask = _mask(rng, 8, 384, np.int64)
    for view in (np.asfortranarray(mask), mask[::2], mask[:, :200]):
        assert right_padded_lengths(view) == _reference_lengths(view)


def test_row_lengths_of_empty_masks() -> None:
    assert right_padded_lengths(np.ones((3, 0), np.int64)) == [0, 0, 0]
    assert right_padded_lengths(np.ones((0, 384), np.int64)) == []
    assert right_padded_lengths(np.zeros((2, 384), np.int64)) == [0, 0]


def _below(array: np.ndarray, limit: int) -> bool:
    wide = array.astype(np.int64) if array.dtype != np.uint64 else array.astype(object)
    return bool(array.size == 0 or (wide.min() >= 0 and wide.max() < limit))


@pytest.mark.parametrize("size", [0, 1, HELD, HELD + 1, 4 * 384, HELD * PIECES, HELD * PIECES + 1])
@pytest.mark.parametrize("dtype", ["<i8", "<i4", "<i2", "i1", "<u2", "<u8", ">i8"])
def test_all_below_agrees_with_a_min_and_a_max(size: int, dtype: str) -> None:
    rng = np.random.default_rng(size)
    info = np.iinfo(dtype)
    for limit in (1, 2, 100, 128, 129, 30522, 1 << 40):
        array = rng.integers(0, min(info.max, 2 * limit), size, endpoint=True).astype(dtype)
        if size and info.min < 0 and rng.random() < 0.5:
            array[int(rng.integers(size))] = -1  # a negative id: never below any limit
        for view in (array, array[::2], array.reshape(-1, 1)):
            assert all_below(view, limit) is _below(view, limit), (view.shape, limit)


def test_a_negative_int8_id_fails_a_limit_past_127() -> None:
    """Read unsigned, int8's -5 is 251: below a vocabulary of 30,522, yet not an id."""
    assert all_below(np.array([3, -5, 7], np.int8), 30522) is False
    assert all_below(np.array([3, 5, 127], np.int8), 30522) is True
