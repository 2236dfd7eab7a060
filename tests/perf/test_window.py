"""Windows: percentiles as perf_analyzer takes them, merging, server deltas, Measurement."""

from __future__ import annotations

import numpy as np
import pytest

from bertserve.perf.load import send_gaps
from bertserve.perf.window import (
    Recorder,
    ServerCounters,
    merge_windows,
    percentile,
    server_counters,
    summarize,
)


def _records(latencies_us: list[int], *, start: int = 0, ok: bool = True) -> list:
    return [(start, start + int(lat * 1000), 2000, 3000, ok) for lat in latencies_us]


def test_percentile_is_perf_analyzers_rounded_rank() -> None:
    values = np.arange(1, 101, dtype=float)  # 1..100
    assert percentile(values, 50) == 51.0  # index round(0.5 * 99) = 50 (49.5 + 0.5)
    assert percentile(values, 99) == 99.0  # index round(98.01) = 98
    assert percentile(values, 90) == 90.0
    assert percentile(np.array([7.0]), 99) == 7.0
    assert percentile(np.empty(0), 50) == 0.0


def test_summarize_counts_successes_and_errors() -> None:
    records = _records([1000, 2000, 3000]) + _records([50], ok=False)
    w = summarize(records, duration_s=0.5, server=None, delayed=1, dropped=2, client_cpu_s=0.1)
    assert w.request_count == 3
    assert w.errors == 1
    assert w.throughput(batch_size=2) == pytest.approx(3 * 2 / 0.5)
    assert w.avg_us == pytest.approx(2000)
    assert w.latency_us("p50") == 2000
    assert w.latency_us("avg") == pytest.approx(2000)
    assert w.client_cpu_fraction == pytest.approx(0.2)


def test_merge_is_one_long_window() -> None:
    a = summarize(
        _records([1000] * 10),
        duration_s=1.0,
        server=ServerCounters(10, 10_000_000),
        delayed=0,
        dropped=0,
        client_cpu_s=0.1,
    )
    b = summarize(
        _records([3000] * 30),
        duration_s=1.0,
        server=ServerCounters(30, 90_000_000),
        delayed=2,
        dropped=1,
        client_cpu_s=0.3,
    )
    m = merge_windows([a, b])
    assert m.windows == 2
    assert m.request_count == 40
    assert m.throughput(1) == pytest.approx(20.0)
    assert m.avg_us == pytest.approx((10 * 1000 + 30 * 3000) / 40)
    assert m.server == ServerCounters(40, 100_000_000)
    assert (m.delayed_sends, m.dropped_sends) == (2, 1)
    assert m.client_cpu_fraction == pytest.approx(0.2)
    with pytest.raises(ValueError):
        merge_windows([])


def test_measurement_breakdown_adds_up_to_the_average() -> None:
    server = ServerCounters(
        4,
        queue_ns=4_000_000,
        compute_input_ns=400_000,
        compute_infer_ns=2_000_000,
        compute_output_ns=200_000,
    )
    w = summarize(
        _records([2000, 2000, 3000, 3000]),
        duration_s=1.0,
        server=server,
        delayed=0,
        dropped=0,
        client_cpu_s=0.0,
    )
    m = w.to_measurement(batch_size=1, concurrency=2)
    assert m.server_queue_us == pytest.approx(1000)
    assert m.server_compute_input_us == pytest.approx(100)
    assert m.server_compute_infer_us == pytest.approx(500)
    assert m.server_compute_output_us == pytest.approx(50)
    assert m.client_send_us == pytest.approx(2) and m.client_recv_us == pytest.approx(3)
    assert m.breakdown_sum_us == pytest.approx(m.latency_avg_us)
    assert m.delayed_sends is None  # closed loop: no schedule to be late for
    assert m.extras["stable"] == 1.0
    open_loop = w.to_measurement(batch_size=1, request_rate=50.0, stable=False)
    assert open_loop.delayed_sends == 0 and open_loop.extras["stable"] == 0.0


def test_server_counters_pick_the_model_and_version() -> None:
    def entry(name: str, version: str, count: int) -> dict:
        stat = {"count": count, "ns": count * 1000}
        return {
            "name": name,
            "version": version,
            "inference_stats": {
                "success": stat,
                "queue": stat,
                "compute_input": stat,
                "compute_infer": stat,
                "compute_output": stat,
            },
        }

    doc = {"model_stats": [entry("a", "1", 5), entry("a", "2", 7), entry("b", "1", 100)]}
    assert server_counters(doc, "a", "1").success_count == 5
    assert server_counters(doc, "a", "").success_count == 12
    assert server_counters(doc, "c", "").success_count == 0
    # gRPC's JSON form writes 64-bit counters as strings.
    grpc_doc = {
        "model_stats": [
            {
                "name": "a",
                "version": "1",
                "inference_stats": {
                    "success": {"count": "3", "ns": "30"},
                    "queue": {"count": "3", "ns": "9"},
                },
            }
        ]
    }
    assert server_counters(grpc_doc, "a", "1") == ServerCounters(3, 9, 0, 0, 0)
    later = ServerCounters(10, 20, 30, 40, 50)
    assert later - ServerCounters(1, 2, 3, 4, 5) == ServerCounters(9, 18, 27, 36, 45)


async def test_recorder_cuts_and_counts() -> None:
    r = Recorder()
    r.target = 2
    r.add(0, 10, 1, 1, True)
    assert not r.full.is_set()
    r.add(0, 20, 1, 1, False)
    assert r.full.is_set()
    r.delayed += 3
    records, delayed, dropped = r.cut()
    assert len(records) == 2 and delayed == 3 and dropped == 0
    assert not r.full.is_set()
    assert r.cut() == ([], 0, 0)


def test_poisson_gaps_have_the_asked_mean_and_spread() -> None:
    gaps = send_gaps("poisson", 200.0, 200_000, np.random.default_rng(1))
    assert gaps.mean() == pytest.approx(5e6, rel=0.01)  # 5 ms in ns
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.02)  # exponential: CV = 1
    assert set(send_gaps("constant", 200.0, 10, np.random.default_rng(1)).tolist()) == {5e6}
