"""How bertserve.perf.analyzer finds and runs perf_analyzer, with a stand-in script.

These run without the real binary: a small shell script plays perf_analyzer, records its
arguments and writes a report in perf_analyzer's CSV format.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bertserve.perf.analyzer import (
    ENV_VAR,
    PerfAnalyzerFailed,
    find_perf_analyzer,
    profile,
    run_perf_analyzer,
)

CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency\n"
    "2,410.5,20,300,150,30,4200,25,10,4800,5200,5400,6100\n"
    "1,250,18,250,90,28,3500,22,9,3900,4100,4300,4700\n"
)


def fake(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-perf-analyzer"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def writes_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in that saves its arguments and writes CSV to the file after -f."""
    args_file = tmp_path / "args"
    (tmp_path / "report.csv").write_text(CSV)
    script = fake(
        tmp_path,
        f'printf "%s\\n" "$@" > {args_file}\n'
        "while [[ $# -gt 0 ]]; do if [[ $1 == -f ]]; then "
        f'cp {tmp_path / "report.csv"} "$2"; fi; shift; done\n',
    )
    monkeypatch.setenv(ENV_VAR, str(script))
    return args_file


def test_env_var_wins_and_is_a_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "/opt/pa/perf_analyzer --verbose-csv")
    assert find_perf_analyzer() == ["/opt/pa/perf_analyzer", "--verbose-csv"]


def test_absent_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("bertserve.perf.analyzer._wrapper_candidates", lambda: [])
    assert find_perf_analyzer() is None
    with pytest.raises(FileNotFoundError, match="install_perf_analyzer.sh"):
        run_perf_analyzer(["--version"], timeout=10)


def test_found_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    script = fake(tmp_path, "exit 0\n")
    script.rename(tmp_path / "perf_analyzer")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("bertserve.perf.analyzer._wrapper_candidates", lambda: [])
    assert find_perf_analyzer() == [str(tmp_path / "perf_analyzer")]


def test_profile_reads_the_report_in_sweep_order(writes_report: Path) -> None:
    points = profile(["-m", "m", "--concurrency-range", "1:2"], timeout=30, batch_size=2)
    assert [p.concurrency for p in points] == [1, 2]
    assert points[1].throughput == pytest.approx(410.5)
    assert points[1].server_compute_infer_us == 4200
    assert points[0].latency_p99_us == 4700
    assert all(p.batch_size == 2 for p in points)


def test_profile_sends_zeros_unless_told(writes_report: Path) -> None:
    profile(["-m", "m"], timeout=30)
    args = writes_report.read_text().split("\n")
    assert args[args.index("--input-data") + 1] == "zero"
    profile(["-m", "m", "--input-data", "random"], timeout=30)
    args = writes_report.read_text().split("\n")
    assert args.count("--input-data") == 1
    assert args[args.index("--input-data") + 1] == "random"


def test_failure_carries_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = fake(tmp_path, 'echo "Failed to obtain stable measurement."\nexit 99\n')
    monkeypatch.setenv(ENV_VAR, str(script))
    with pytest.raises(PerfAnalyzerFailed) as failed:
        profile(["-m", "m"], timeout=30)
    assert failed.value.returncode == 99
    assert "stable measurement" in str(failed.value)
