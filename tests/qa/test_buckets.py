from __future__ import annotations

import numpy as np
import pytest

from bertserve.qa.buckets import ModelCall, bucket_for, pad_windows, plan_calls
from bertserve.qa.windows import Window


def test_bucket_for_picks_smallest_that_fits() -> None:
    buckets = (64, 128, 384)
    assert [bucket_for(n, buckets) for n in (1, 64, 65, 128, 129, 384)] == [
        64,
        64,
        128,
        128,
        384,
        384,
    ]
    with pytest.raises(ValueError):
        bucket_for(385, buckets)


def test_plan_calls_groups_by_bucket_and_chunks() -> None:
    lengths = [300, 40, 100, 60, 384, 50, 70]
    calls = plan_calls(lengths, (64, 128, 384), max_windows=2)
    assert calls == [
        ModelCall(64, (1, 3)),
        ModelCall(64, (5,)),
        ModelCall(128, (2, 6)),
        ModelCall(384, (0, 4)),
    ]
    assert sorted(i for c in calls for i in c.windows) == list(range(len(lengths)))


def test_single_bucket_pads_everything_to_max() -> None:
    calls = plan_calls([10, 300, 200], (384,), max_windows=8)
    assert calls == [ModelCall(384, (0, 1, 2))]


def _window(n: int) -> Window:
    return Window(
        item=0,
        input_ids=np.arange(1, n + 1, dtype=np.int64),
        token_type_ids=np.ones(n, dtype=np.int64),
        context=range(n),
        source=np.zeros((n, 2), dtype=np.int64),
    )


def test_pad_windows_zero_pads_and_masks() -> None:
    batch = pad_windows([_window(3), _window(5)], 8)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(batch["input_ids"][0], [1, 2, 3, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["attention_mask"][1], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(batch["token_type_ids"][0], [1, 1, 1, 0, 0, 0, 0, 0])
