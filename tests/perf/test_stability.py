"""perf_analyzer's stability rule on synthetic window series."""

from __future__ import annotations

import pytest

from bertserve.perf.stability import STABILITY_WINDOWS, is_stable, within_threshold


def test_three_windows_are_needed() -> None:
    assert STABILITY_WINDOWS == 3
    assert not is_stable([100.0, 100.0], [5.0, 5.0], 10)
    assert is_stable([100.0, 100.0, 100.0], [5.0, 5.0, 5.0], 10)


def test_only_the_last_three_windows_count() -> None:
    throughputs = [10.0, 500.0, 100.0, 104.0, 97.0]
    latencies = [90.0, 1.0, 5.0, 5.1, 4.9]
    assert is_stable(throughputs, latencies, 10)


@pytest.mark.parametrize(
    ("throughputs", "latencies", "stable"),
    [
        ([100, 109, 100], [5, 5, 5], True),  # mean 103: 109 is +5.8%
        ([100, 125, 100], [5, 5, 5], False),  # mean 108.3: 125 is +15%
        ([100, 100, 100], [5, 6.5, 5], False),  # latency +18% of its mean
        ([100, 100, 100], [5, 5.4, 5], True),
        ([0, 0, 0], [0, 0, 0], False),  # nothing completed is never stable
        ([100, 0, 100], [5, 5, 5], False),
    ],
)
def test_within_plus_minus_s_percent_of_the_mean(
    throughputs: list[float], latencies: list[float], stable: bool
) -> None:
    assert is_stable(throughputs, latencies, 10) is stable


def test_threshold_is_a_percentage() -> None:
    series = [100.0, 125.0, 100.0]
    assert not is_stable(series, [1.0] * 3, 10)
    assert is_stable(series, [1.0] * 3, 20)


def test_within_threshold_edges() -> None:
    assert not within_threshold([], 0.1)
    assert within_threshold([1.0], 0.0)
    assert within_threshold([90.0, 110.0], 0.1)  # exactly ±10% of the mean 100
    assert not within_threshold([89.0, 111.0], 0.1)


def test_series_must_line_up() -> None:
    with pytest.raises(ValueError, match="one entry per window"):
        is_stable([1.0, 2.0, 3.0], [1.0, 2.0], 10)
