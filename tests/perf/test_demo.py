"""`bertserve demo --quick`: the README's one command, end to end, in its smallest setting."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from bertserve.builder.presets import PRESETS
from bertserve.cli import main
from bertserve.commands.demo import plan
from bertserve.perf.results import read_perf_analyzer_csv, read_run
from bertserve.perf.settings import parse_range

pytestmark = pytest.mark.e2e


def test_plan() -> None:
    assert [m.name for m in plan(quick=True, gpu=False, seq_len=64)] == ["bert_tiny_onnx_cpu"]
    full = plan(quick=False, gpu=True, seq_len=64)
    assert [m.device for m in full] == ["cpu", "cpu", "cpu", "cpu", "gpu"]
    swept = [m for m in full if m.preset == "distilbert" and not m.reference_setting]
    assert all(m.seq_len == 64 for m in swept)
    assert len({m.run_label for m in full}) == len(full)  # report labels are unique


def test_plan_measures_the_reference_point_too() -> None:
    """Like with like: the reference's DistilBERT CPU row is sequence 384, 2 inferences a
    request, concurrency 4 (its headline point; see the packaged CSV)."""
    from bertserve.report.reference import load_reference

    (point,) = [m for m in plan(quick=False, gpu=False, seq_len=128) if m.reference_setting]
    ref = load_reference().deployment("bert_distill_tf_cpu")
    headline = max(ref.run.measurements, key=lambda m: m.throughput)
    assert (point.seq_len, point.batch_size) == (ref.run.seq_len, ref.run.batch_size)
    assert point.concurrency == str(int(headline.load))


def test_gpu_demo_sweeps_loads_that_fill_the_preferred_batch() -> None:
    """The GPU variant keeps the reference's batching (preferred 4, up to 200 ms of delay): a
    load that is not a multiple of 4 would measure the delay, not the engine."""
    (gpu,) = [m for m in plan(quick=False, gpu=True, seq_len=128) if m.device == "gpu"]
    (variant,) = [v for v in PRESETS[gpu.preset] if v.name == gpu.name]
    preferred = variant.batching.preferred_batch_sizes
    assert gpu.concurrency is not None
    loads = parse_range(gpu.concurrency, integer=True, flag="--concurrency-range").values()
    assert loads and all(any(int(load) % size == 0 for size in preferred) for load in loads)
    cpu_sweeps = [m for m in plan(quick=False, gpu=True, seq_len=128) if m.device == "cpu"]
    assert all(m.concurrency is None for m in cpu_sweeps if not m.reference_setting)


def test_quick_demo_writes_the_report(
    tiny_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    # The session's tiny repository is reused (the demo builds only what is missing).
    code = main(["demo", "--quick", "--output", str(out), "--repository", str(tiny_repo)])
    assert code == 0
    printed = capsys.readouterr().out
    # The QA pipeline `bertserve build` wrote answered a question and the SQuAD sample.
    assert "bert_tiny_onnx_cpu_qa: 'Who designed the lighthouse?'" in printed
    assert "SQuAD v2.0 sample shipped with bertserve: 23 questions" in printed
    # It ends with how the machine was priced, and a verdict in dollars.
    closing = printed.rstrip().splitlines()[-3:]
    assert closing[0].startswith("Assumed: this machine (")
    assert "--machine ID prices it as another" in closing[0]
    assert re.match(r"tiny BERT FP32 on this \d+-vCPU machine: \$[\d.]+ per million", closing[1])
    assert re.match(r"Verdict: pick bert_tiny_onnx_cpu on \S+, \$[\d.]+ per million", closing[2])
    for name in ("report.md", "report.html", "latency_throughput.png", "latency_breakdown.png"):
        assert (out / name).stat().st_size > 0, name
    run = read_run(out / "runs" / "bert_tiny_onnx_cpu.json")
    assert run.random_weights
    assert [m.concurrency for m in run.measurements] == [1, 2]
    assert all(m.throughput > 0 and m.errors == 0 for m in run.measurements)
    assert len(read_perf_analyzer_csv(out / "runs" / "bert_tiny_onnx_cpu.csv")) == 2
    assert "RANDOM WEIGHTS" in (out / "report.md").read_text()
    # The demo's server was stopped, cleanly.
    assert "bertserve stopped" in (out / "server.log").read_text()


def test_unknown_machine_fails_before_any_work(tmp_path: Path) -> None:
    code = main(["demo", "--quick", "--output", str(tmp_path), "--machine", "no-such-machine"])
    assert code == 1
    assert not (tmp_path / "server.log").exists()


def test_demo_without_the_build_extra_names_it_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    args = ["demo", "--quick", "--output", str(tmp_path / "o"), "--repository", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "bertserve demo needs the build extra (torch missing): pip install 'bertserve[build]'"
    )
    assert not (tmp_path / "o" / "server.log").exists()


def test_machine_flag_prices_as_that_machine_without_an_assumption(
    tiny_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--quick", "--output", str(tmp_path / "r"), "--repository", str(tiny_repo)]
    assert main([*args, "--machine", "aws-m5-xlarge"]) == 0
    closing = capsys.readouterr().out.rstrip().splitlines()[-2:]
    assert re.match(r"tiny BERT FP32 on aws-m5-xlarge: \$[\d.]+ per million", closing[0])
    assert closing[1].startswith("Verdict: pick bert_tiny_onnx_cpu on aws-m5-xlarge, $")
    assert read_run(tmp_path / "r" / "runs" / "bert_tiny_onnx_cpu.json").machine == "aws-m5-xlarge"
