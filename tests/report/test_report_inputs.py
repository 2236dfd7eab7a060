"""`--input` specs and loading results files into runs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from bertserve import report
from bertserve.perf.results import Measurement, Run, write_run
from bertserve.report import InputError, load_input, parse_input_spec

TRT_CSV = resources.files("bertserve") / "data" / "reference" / "perf_bert_base_gpu_trt.csv"


def test_public_names_are_exported() -> None:
    for name in report.__all__:
        assert hasattr(report, name)


def test_spec_syntax() -> None:
    spec = parse_input_spec(
        "runs/perf.csv:label=TRT: T4, fp16:machine=gcp-n1-standard-4-t4:batch=2"
    )
    assert spec.path == Path("runs/perf.csv")
    assert spec.label == "TRT: T4, fp16"  # a colon not followed by key= stays in the value
    assert spec.machine == "gcp-n1-standard-4-t4"
    assert spec.batch == 2 and spec.random_weights is None
    assert parse_input_spec("a.json:random_weights=yes").random_weights is True
    assert parse_input_spec("C:/x.csv").path == Path("C:/x.csv")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (":label=x", "no file"),
        ("a.csv:batch=two", "batch= must be a positive integer"),
        ("a.csv:batch=0", "batch= must be a positive integer"),
        ("a.csv:random_weights=maybe", "yes or no"),
        ("a.csv:label=a:label=b", "label= given twice"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_input_spec(spec)


def test_csv_input_is_tagged() -> None:
    with resources.as_file(TRT_CSV) as path:
        run = load_input(parse_input_spec(f"{path}:label=TRT:machine=gcp-n1-standard-4-t4:batch=2"))
    assert run.label == "TRT" and run.machine == "gcp-n1-standard-4-t4"
    assert run.tool == "perf_analyzer" and run.batch_size == 2
    assert run.measurements[0].requests_per_second == pytest.approx(448.667 / 2)


def test_json_input_keeps_its_fields_unless_overridden(tmp_path: Path) -> None:
    point = Measurement(
        concurrency=1,
        throughput=10.0,
        latency_p50_us=1,
        latency_p90_us=2,
        latency_p95_us=3,
        latency_p99_us=4,
    )
    path = tmp_path / "run.json"
    write_run(
        Run(label="mine", machine="aws-g4dn-xlarge", random_weights=True, measurements=(point,)),
        path,
    )
    run = load_input(parse_input_spec(str(path)))
    assert (run.label, run.machine, run.random_weights) == ("mine", "aws-g4dn-xlarge", True)
    run = load_input(parse_input_spec(f"{path}:label=other:machine=aws-g5-xlarge"))
    assert (run.label, run.machine) == ("other", "aws-g5-xlarge")
    with pytest.raises(InputError, match="contradicts the run's batch_size"):
        load_input(parse_input_spec(f"{path}:batch=4"))
