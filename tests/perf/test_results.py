"""Measurement / Run records and perf_analyzer CSV reading and writing."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from bertserve.perf import results
from bertserve.perf.results import (
    Measurement,
    ResultsFormatError,
    Run,
    read_perf_analyzer_csv,
    read_run,
    write_perf_analyzer_csv,
    write_run,
)

REFERENCE = resources.files("bertserve") / "data" / "reference"
REFERENCE_CSVS = sorted(p.name for p in REFERENCE.iterdir() if p.name.endswith(".csv"))
HEADER = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency"
)


def _point(concurrency: int, throughput: float, **kw: float) -> Measurement:
    base = dict(
        latency_p50_us=1000.0,
        latency_p90_us=1100.0,
        latency_p95_us=1200.0,
        latency_p99_us=1300.0,
        client_send_us=10.0,
        network_server_send_recv_us=90.0,
        server_queue_us=100.0,
        server_compute_input_us=50.0,
        server_compute_infer_us=700.0,
        server_compute_output_us=40.0,
        client_recv_us=10.0,
    )
    base.update(kw)
    return Measurement(concurrency=concurrency, batch_size=2, throughput=throughput, **base)


def test_public_names_are_exported() -> None:
    for name in results.__all__:
        assert hasattr(results, name)


def test_seven_reference_csvs_load_unchanged() -> None:
    assert len(REFERENCE_CSVS) == 7
    for name in REFERENCE_CSVS:
        with resources.as_file(REFERENCE / name) as path:
            points = read_perf_analyzer_csv(path, batch_size=2)
        assert points, name
        loads = [p.concurrency for p in points]
        assert loads == sorted(loads), f"{name}: not in sweep order"


def test_reference_row_values_and_sweep_order() -> None:
    with resources.as_file(REFERENCE / "perf_bert_base_gpu_trt.csv") as path:
        points = read_perf_analyzer_csv(path, batch_size=2)
    assert [p.concurrency for p in points] == list(range(4, 25, 2))
    c8 = points[2]
    assert c8.concurrency == 8
    assert c8.throughput == pytest.approx(465.333)
    assert c8.requests_per_second == pytest.approx(465.333 / 2)
    assert c8.latency_p90_us == 42823
    assert c8.latency_us("p99") == 52677
    assert c8.server_compute_infer_us == 13555
    # No "Avg latency" column: the average is the component sum, as perf_analyzer derives it.
    assert c8.latency_avg_us is None
    assert c8.latency_us("avg") == 142 + 5920 + 9546 + 5085 + 13555 + 60 + 1


def test_csv_written_matches_perf_analyzer_bytes(tmp_path: Path) -> None:
    for name in REFERENCE_CSVS:
        original = (REFERENCE / name).read_text(encoding="utf-8")
        with resources.as_file(REFERENCE / name) as path:
            points = read_perf_analyzer_csv(path, batch_size=2)
        out = tmp_path / name
        write_perf_analyzer_csv(points, out)
        assert out.read_text(encoding="utf-8") == original, name


def test_csv_round_trip_request_rate_and_rounding(tmp_path: Path) -> None:
    points = [
        Measurement(
            request_rate=rate,
            throughput=rate * 0.999,
            latency_p50_us=1.4,
            latency_p90_us=2.6,
            latency_p95_us=3.0,
            latency_p99_us=4.0,
        )
        for rate in (50.0, 12.5)
    ]
    out = tmp_path / "rate.csv"
    write_perf_analyzer_csv(points, out)
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADER.replace("Concurrency", "Request Rate")
    assert text.splitlines()[1].startswith("12.5,12.4875,")
    back = read_perf_analyzer_csv(out)
    assert [p.request_rate for p in back] == [12.5, 50.0]
    assert back[0].latency_p50_us == 1 and back[0].latency_p90_us == 3


def test_verbose_csv_extra_columns_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "verbose.csv"
    path.write_text(
        HEADER + ",Avg latency,request/response,response wait\n"
        "4,100,1,2,3,4,5,6,7,30,40,50,60,29,26,25\n",
        encoding="utf-8",
    )
    (point,) = read_perf_analyzer_csv(path)
    assert point.latency_avg_us == 29
    assert point.latency_us("avg") == 29
    assert point.extras == {"request/response": 26.0, "response wait": 25.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: empty file"),
        ("Batch,Inferences/Second\n1,2\n", "line 1: first column is 'Batch'"),
        ("Concurrency,Inferences/Second\n1,2\n", "line 1: missing column(s) Client Send"),
        (HEADER + "\n4,100,1,2,3,4,5,6,7,30,40,50,60\n6,1,2\n", "line 3: 3 fields"),
        (HEADER + "\n4,100,1,2,3,4,5,6,7,30,forty,50,60\n", "line 2: column 'p90 latency'"),
        (HEADER + "\n0,100,1,2,3,4,5,6,7,30,40,50,60\n", "line 2: concurrency must be"),
        (HEADER + "\n", "line 2: no measurements"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ResultsFormatError) as info:
        read_perf_analyzer_csv(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ResultsFormatError, match="no such file"):
        read_perf_analyzer_csv(tmp_path / "absent.csv")


def test_run_json_round_trip(tmp_path: Path) -> None:
    run = Run(
        label="TRT T4",
        model="bert_base_trt_gpu",
        model_version="1",
        url="http://localhost:8000",
        protocol="http",
        machine="gcp-n1-standard-4-t4",
        batch_size=2,
        tool="bertserve perf",
        random_weights=True,
        notes="smoke",
        date="2026-11-25T12:00:00Z",
        measurements=(
            _point(8, 465.0, latency_avg_us=1234.5),
            Measurement(
                concurrency=4,
                batch_size=2,
                throughput=400.0,
                latency_p50_us=1.0,
                latency_p90_us=2.0,
                latency_p95_us=3.0,
                latency_p99_us=4.0,
                request_count=1200,
                errors=3,
                delayed_sends=1,
                dropped_sends=0,
                extras={"gpu_utilization": 0.9},
            ),
        ),
    )
    assert [m.concurrency for m in run.measurements] == [4, 8]
    assert Run.from_json(run.to_json()) == run
    path = tmp_path / "run.json"
    write_run(run, path)
    assert read_run(path) == run


def test_run_json_errors_name_the_source(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text('{"format": "bertserve.run",\n "format_version": 1,\n', encoding="utf-8")
    with pytest.raises(ResultsFormatError, match=r"run\.json, line 3: invalid JSON"):
        read_run(path)
    path.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(ResultsFormatError, match="not a bertserve run"):
        read_run(path)
    bad_point = Run(label="x", measurements=(_point(4, 1.0),)).to_dict()
    bad_point["measurements"][0]["throughput"] = -1
    with pytest.raises(ResultsFormatError, match="measurement 0: throughput"):
        Run.from_json(json.dumps(bad_point))


def test_run_points_must_match_its_mode() -> None:
    rate_point = Measurement(
        request_rate=5.0,
        throughput=5.0,
        latency_p50_us=1,
        latency_p90_us=1,
        latency_p95_us=1,
        latency_p99_us=1,
    )
    with pytest.raises(ValueError, match="run mode is concurrency"):
        Run(label="x", measurements=(rate_point,))
    assert Run(label="x", mode="request_rate", measurements=(rate_point,)).measurements


def test_csv_with_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\n4,100,1,2,3,4,5,6,7,30,40,50,60\r\n").encode())
    (point,) = read_perf_analyzer_csv(path)
    assert point.concurrency == 4 and point.latency_p99_us == 60


def test_measurement_needs_exactly_one_load() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Measurement(
            throughput=1.0,
            latency_p50_us=1,
            latency_p90_us=1,
            latency_p95_us=1,
            latency_p99_us=1,
        )
    with pytest.raises(ValueError, match="unknown latency statistic"):
        _point(4, 1.0).latency_us("p42")
