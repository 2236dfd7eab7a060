"""The sweep logic on an in-process fake server: no sockets, exact service times."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from bertserve.perf.input_data import InputDataError
from bertserve.perf.profiler import SweepEvents, run_sweep
from bertserve.perf.session import run_async
from bertserve.perf.settings import LoadRange, PerfSettings
from bertserve.perf.transport import Connection, Outcome, Transport, TransportError

SERVICE_S = 0.004


class FakeConnection(Connection):
    def __init__(self, server: FakeTransport) -> None:
        self.server = server

    async def infer(self, payload: Any) -> Outcome:
        await asyncio.sleep(SERVICE_S)
        self.server.served += 1
        return True, 0, 0

    def close(self) -> None:
        return None


class FakeTransport(Transport):
    """One model, input x of [batch, 4] FP32; statistics optional."""

    def __init__(self, *, with_stats: bool) -> None:
        super().__init__("fake:0", "m", "")
        self.with_stats = with_stats
        self.served = 0
        self.checked: list[dict[str, np.ndarray]] = []

    async def start(self) -> None:
        return None

    async def model_metadata(self) -> dict[str, Any]:
        return {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}

    async def max_batch_size(self) -> int:
        return 8

    async def statistics(self) -> dict[str, Any]:
        if not self.with_stats:
            raise TransportError("statistics extension not supported")
        n = self.served
        stat = {"count": n, "ns": n * 1_000_000}
        return {"model_stats": [{"name": "m", "version": "1", "inference_stats": {
            "success": stat, "queue": stat, "compute_infer": stat}}]}  # fmt: skip

    def prepare(self, inputs: dict[str, np.ndarray], placed: Any = None) -> Any:
        return inputs

    async def check(self, inputs: dict[str, np.ndarray], placed: Any = None) -> None:
        self.checked.append(inputs)

    async def connect(self) -> Connection:
        return FakeConnection(self)

    async def close(self) -> None:
        return None


def sweep(transport: FakeTransport, **overrides: Any) -> tuple[Any, list[str]]:
    warnings: list[str] = []
    base: dict[str, Any] = dict(
        model="m", window_ms=150.0, max_trials=5, stability_percent=50.0, batch_size=2
    )
    base.update(overrides)
    events = SweepEvents(on_warning=warnings.append)
    return run_async(run_sweep(PerfSettings(**base), transport, events)), warnings


def test_sweep_with_server_statistics() -> None:
    fake = FakeTransport(with_stats=True)
    run, warnings = sweep(fake, concurrency=LoadRange(1, 3, 2))
    assert fake.checked[0]["x"].shape == (2, 4)  # -b 2, fixed dims from metadata
    assert [m.concurrency for m in run.measurements] == [1, 3]
    for m in run.measurements:
        assert m.server_queue_us == pytest.approx(1000, rel=0.05)
        assert m.server_compute_infer_us == pytest.approx(1000, rel=0.05)
        assert m.latency_p50_us >= SERVICE_S * 1e6
        in_flight = m.requests_per_second * m.latency_avg_us / 1e6
        assert in_flight == pytest.approx(m.concurrency, rel=0.1)
    assert not [w for w in warnings if "statistics" in w]


def test_sweep_without_server_statistics_warns_once() -> None:
    run, warnings = sweep(FakeTransport(with_stats=False), concurrency=LoadRange(1, 2, 1))
    assert len(run.measurements) == 2
    assert all(m.server_queue_us == 0 and m.server_compute_infer_us == 0 for m in run.measurements)
    assert len([w for w in warnings if "no server statistics" in w]) == 1


def test_unstable_point_is_reported_and_flagged() -> None:
    run, warnings = sweep(
        FakeTransport(with_stats=True), stability_percent=1e-9, max_trials=4, window_ms=60.0
    )
    (m,) = run.measurements
    assert m.extras["stable"] == 0.0
    assert m.extras["windows"] == 3  # the last three windows, merged
    assert any("no 3 windows agreed" in w and "4 trials" in w for w in warnings)


def test_batch_larger_than_the_model_allows() -> None:
    with pytest.raises(InputDataError, match="exceeds the model's max_batch_size 8"):
        sweep(FakeTransport(with_stats=True), batch_size=9)


def test_request_rate_over_capacity_drops_and_warns() -> None:
    # 4 ms per request and at most 2 in flight: about 500/s can leave; 1,000/s are asked.
    run, warnings = sweep(
        FakeTransport(with_stats=True),
        request_rate=LoadRange(1000, 1000, 1),
        max_in_flight=2,
        stability_percent=100.0,
    )
    (m,) = run.measurements
    assert m.dropped_sends is not None and m.dropped_sends > 0
    assert m.throughput / m.batch_size < 600
    assert m.latency_p50_us >= SERVICE_S * 1e6
    assert any("sends dropped at --max-in-flight 2" in w for w in warnings)
