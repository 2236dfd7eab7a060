"""perf_analyzer flags users pass to `bertserve perf`: -a, -v, --verbose-csv, -H,
--collect-metrics, --shared-memory, the exit status of an unstable measurement, and the
usage an unknown flag prints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bertserve.cli import build_parser, main
from bertserve.commands.perf import settings_from_args
from bertserve.perf.http_transport import HttpTransport
from bertserve.perf.results import Measurement, read_perf_analyzer_csv, write_perf_analyzer_csv
from bertserve.perf.server_metrics import gpu_cells
from bertserve.perf.settings import PerfSettings
from tests.conftest import TINY, ServerProcess
from tests.perf.conftest import SEQ

#: The header the real perf_analyzer 2.50 writes with --verbose-csv --collect-metrics.
VERBOSE_HEADER = [
    "Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv",
    "Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output",
    "Client Recv", "p50 latency", "p90 latency", "p95 latency", "p99 latency", "Avg latency",
    "request/response", "response wait", "Avg GPU Utilization", "Avg GPU Power Usage",
    "Max GPU Memory Usage", "Total GPU Memory",
]  # fmt: skip
SHAPES = [f"--shape={name}:{SEQ}" for name in ("input_ids", "attention_mask", "token_type_ids")]


def _settings(*flags: str) -> PerfSettings:
    return settings_from_args(build_parser().parse_args(["perf", "-m", "m", *flags]))


def test_flags_map_onto_settings() -> None:
    s = _settings(
        "-a", "-v", "--verbose-csv", "--collect-metrics", "--metrics-url", "h:9/metrics",
        "--metrics-interval", "250", "-H", "Authorization: Bearer x", "-H", "X-Trace:1",
    )  # fmt: skip
    assert s.asynchronous and s.verbose and s.verbose_csv and s.collect_metrics
    assert (s.metrics_url, s.metrics_interval_ms) == ("h:9/metrics", 250.0)
    assert s.http_headers == (("Authorization", "Bearer x"), ("X-Trace", "1"))
    assert _settings("--shared-memory", "none").http_headers == ()
    shm = _settings("--shared-memory", "system", "--output-shared-memory-size", "4096")
    assert (shm.shared_memory, shm.output_shared_memory_size) == ("system", 4096)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("-H", "no-colon"), "write NAME:VALUE"),
        (("--collect-metrics",), "add --verbose-csv"),
        (("--shared-memory", "cuda"), "system shared memory only"),
        (("--shared-memory", "system", "--output-shared-memory-size", "0"), "at least 1 byte"),
    ],
)
def test_bad_flag_values_are_named(flags: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _settings(*flags)


def test_headers_go_into_every_http_request() -> None:
    transport = HttpTransport("127.0.0.1:8000", "m", "")
    transport.headers = (("Authorization", "Bearer x"),)
    head = transport._request("GET", "/v2/models/m").split(b"\r\n\r\n")[0].decode()
    assert "\r\nAuthorization: Bearer x\r\n" in head


def test_an_unknown_flag_prints_the_subcommand_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["perf", "-m", "m", "--no-such-flag"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bertserve perf ")
    assert "unrecognized arguments: --no-such-flag" in err


def test_verbose_csv_has_perf_analyzers_columns_and_reads_back(tmp_path: Path) -> None:
    point = Measurement(
        concurrency=2, throughput=100.0, latency_avg_us=3075.0, latency_p50_us=2869.0,
        latency_p90_us=3675.0, latency_p95_us=4248.0, latency_p99_us=5856.0,
        client_send_us=100.0, server_queue_us=2147.0,
        extras={"gpu_utilization:GPU-a": 0.5, "gpu_utilization:GPU-b": 0.25},
    )  # fmt: skip
    path = tmp_path / "v.csv"
    write_perf_analyzer_csv([point], path, verbose=True, gpu_metrics=True)
    header, row = list(csv.reader(path.read_text().splitlines()))
    assert header == VERBOSE_HEADER
    assert row[13:17] == ["3075", "100", "2975", "GPU-a:0.5;GPU-b:0.25;"]
    assert row[17:] == ["", "", ""]
    (back,) = read_perf_analyzer_csv(path)
    assert back.latency_p99_us == 5856 and back.latency_avg_us == 3075
    assert back.extras["gpu_utilization:GPU-b"] == 0.25


def test_gpu_cells_are_empty_without_gpu_metrics() -> None:
    assert gpu_cells({}) == ["", "", "", ""]


@pytest.mark.e2e
def test_verbose_run_against_the_server(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path, json_path = tmp_path / "p.csv", tmp_path / "p.json"
    code = main([
        "perf", "-m", TINY, "-u", server.http_url, "-a", "-v", "-p", "300", "-s", "60", "-z",
        *SHAPES, "-H", "X-Bertserve-Test: yes", "--verbose-csv", "--collect-metrics",
        "--metrics-url", server.metrics_url, "-f", str(csv_path), "--json", str(json_path),
    ])  # fmt: skip
    stable = [m["extras"]["stable"] for m in json.loads(json_path.read_text())["measurements"]]
    assert code == (0 if all(stable) else 2)
    assert "  load 1 window 1/" in capsys.readouterr().out  # -v: every window
    header, *rows = list(csv.reader(csv_path.read_text().splitlines()))
    assert header == VERBOSE_HEADER and len(rows) == 1
    assert rows[0][16:] == ["", "", "", ""]  # a CPU machine's server has no GPU metrics


@pytest.mark.e2e
def test_unstable_measurement_exits_2(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No 3 windows of a real sweep agree within 0.0001%: perf_analyzer's status 2."""
    code = main([
        "perf", "-m", TINY, "-u", server.http_url, "-p", "100", "-r", "3", "-s", "0.0001",
        "-z", *SHAPES, "-f", str(tmp_path / "p.csv"),
    ])  # fmt: skip
    assert code == 2
    assert "no stable measurement at 1 (results written anyway)" in capsys.readouterr().err
    assert (tmp_path / "p.csv").is_file()
