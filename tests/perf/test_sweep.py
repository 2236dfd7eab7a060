"""`bertserve perf` against the real server: sweeps hang together, modes keep their promises,
files come out in perf_analyzer's format."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bertserve.cli import main
from bertserve.perf.profiler import profile
from bertserve.perf.results import Measurement, read_perf_analyzer_csv, read_run
from bertserve.perf.session import run_async
from bertserve.perf.settings import LoadRange, PerfSettings
from bertserve.perf.transport import TransportError
from tests.conftest import TINY, ServerProcess
from tests.perf.conftest import SEQ

pytestmark = pytest.mark.e2e

Make = Callable[..., PerfSettings]

PERF_ANALYZER_HEADER = [
    "Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv",
    "Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output",
    "Client Recv", "p50 latency", "p90 latency", "p95 latency", "p99 latency",
]  # fmt: skip


def assert_consistent(m: Measurement) -> None:
    assert m.errors == 0
    assert m.request_count > 0 and m.throughput > 0
    assert m.latency_p50_us <= m.latency_p90_us <= m.latency_p95_us <= m.latency_p99_us
    assert m.latency_avg_us is not None
    # Server stages come from the statistics endpoint's deltas and fit inside the client's wait.
    server = m.server_queue_us + m.server_compute_input_us + m.server_compute_infer_us
    server += m.server_compute_output_us
    assert m.server_compute_infer_us > 0 and server <= m.latency_avg_us
    assert m.breakdown_sum_us == pytest.approx(m.latency_avg_us, rel=1e-6)


def test_concurrency_sweep_obeys_littles_law(settings_for: Make) -> None:
    run = run_async(profile(settings_for(concurrency=LoadRange(1, 3, 1), batch_size=2)))
    assert [m.concurrency for m in run.measurements] == [1, 2, 3]
    assert run.batch_size == 2 and run.protocol == "http" and run.tool == "bertserve perf"
    for m in run.measurements:
        assert_consistent(m)
        assert m.batch_size == 2
        assert m.extras["windows"] >= 3
        # In a closed loop, requests in flight = request rate x average latency.
        assert m.concurrency is not None and m.latency_avg_us is not None
        in_flight = m.requests_per_second * m.latency_avg_us / 1e6
        assert in_flight == pytest.approx(m.concurrency, rel=0.1), m


@pytest.mark.parametrize("distribution", ["constant", "poisson"])
def test_request_rate_is_kept(settings_for: Make, distribution: str) -> None:
    rate = 120.0
    settings = settings_for(
        request_rate=LoadRange(rate, rate, 1), distribution=distribution, window_ms=1000.0
    )
    (m,) = run_async(profile(settings)).measurements
    assert m.request_rate == rate and m.mode == "request_rate"
    assert_consistent(m)
    if distribution == "constant":
        assert m.throughput == pytest.approx(rate, rel=0.03)
    else:
        # Poisson arrivals: the count in the merged windows is random; allow 4 sigma.
        expected = rate * m.extras["duration_s"]
        assert m.request_count == pytest.approx(expected, abs=4 * expected**0.5)
    assert m.dropped_sends == 0
    # Reported, not asserted small: how late the timers fire depends on the machine's load.
    assert m.delayed_sends is not None and 0 <= m.delayed_sends <= m.request_count


def test_count_windows(settings_for: Make) -> None:
    settings = settings_for(measurement_mode="count_windows", window_requests=60)
    (m,) = run_async(profile(settings)).measurements
    assert_consistent(m)
    # The merged windows hold at least 3 x 60 requests.
    assert m.request_count >= 180


def test_latency_threshold_stops_the_sweep(settings_for: Make) -> None:
    settings = settings_for(concurrency=LoadRange(1, 4, 1), latency_threshold_ms=0.001)
    run = run_async(profile(settings))
    assert [m.concurrency for m in run.measurements] == [1]


def test_cli_writes_perf_analyzer_csv_and_json(server: ServerProcess, tmp_path: Path) -> None:
    csv_path, json_path = tmp_path / "perf.csv", tmp_path / "perf.json"
    code = main([
        "perf", "-m", TINY, "-u", server.http_url, "--concurrency-range", "1:2",
        "-p", "400", "-s", "30", "-z", "--percentile=95",
        "--shape", f"input_ids:{SEQ}", "--shape", f"attention_mask:{SEQ}",
        "--shape", f"token_type_ids:{SEQ}", "-f", str(csv_path), "--json", str(json_path),
    ])  # fmt: skip
    # perf_analyzer's status: 2 when a level did not stabilize (a busy machine), else 0.
    stable = [m["extras"]["stable"] for m in json.loads(json_path.read_text())["measurements"]]
    assert code == (0 if all(stable) else 2)
    with csv_path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == PERF_ANALYZER_HEADER
    assert len(rows) == 3
    for row in rows[1:]:
        assert all(cell.isdigit() for cell in row[2:]), "latencies are integer microseconds"
    points = read_perf_analyzer_csv(csv_path)
    run = read_run(json_path)
    assert [p.concurrency for p in points] == [m.concurrency for m in run.measurements] == [1, 2]
    for p, m in zip(points, run.measurements, strict=True):
        assert p.latency_p99_us == round(m.latency_p99_us)
    assert "--percentile=95" in run.notes
    assert json.loads(json_path.read_text())["measurements"][0]["extras"]["stable"] in (0, 1)


def test_cli_bad_input_data_is_a_clear_error(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"input_ids": [1, 2]}]}')
    code = main(["perf", "-m", TINY, "-u", server.http_url, "--input-data", str(bad)])
    assert code == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "attention_mask, token_type_ids missing" in err


def test_refused_requests_stop_before_the_sweep(settings_for: Make) -> None:
    with pytest.raises(TransportError, match="unknown model|not found|404"):
        run_async(profile(settings_for(model="no_such_model")))


def test_unreachable_server_says_so(settings_for: Make) -> None:
    with pytest.raises(TransportError, match="cannot connect to 127.0.0.1:9"):
        run_async(profile(settings_for(url="127.0.0.1:9")))


@pytest.mark.skipif(
    importlib.util.find_spec("bertserve.endpoints.grpc") is None,
    reason="the gRPC endpoint (bertserve.endpoints.grpc) is not there yet",
)
def test_grpc_sweep(settings_for: Make, server: ServerProcess) -> None:
    if "grpc" not in server.ports:
        pytest.skip("the server did not start a gRPC service")
    settings = settings_for(protocol="grpc", url=server.grpc_url, concurrency=LoadRange(1, 2, 1))
    run = run_async(profile(settings))
    assert run.protocol == "grpc"
    assert [m.concurrency for m in run.measurements] == [1, 2]
    for m in run.measurements:
        assert_consistent(m)
