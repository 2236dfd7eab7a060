"""The parts the benchmark programs share (benchmarks/harness.py)."""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from bertserve.launch import LaunchError, ServerProcess
from bertserve.perf.analyzer import ENV_VAR, PerfAnalyzerFailed
from tests.conftest import TINY

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def harness() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import harness

        yield harness
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_markdown_table(harness: ModuleType) -> None:
    table = harness.markdown_table(("name", "n"), [("a", 1), ("b", 22)], numeric=(False, True))
    assert table == "| name | n |\n|---|---:|\n| a | 1 |\n| b | 22 |"
    assert harness.markdown_table(("x",), []).splitlines()[1] == "|---:|"


def test_text_table(harness: ModuleType) -> None:
    columns = (harness.Column("server", 8, right=False), harness.Column("inf/s", 6))
    assert harness.text_header(columns) == "server    inf/s\n" + "-" * 15
    assert harness.text_row(columns, ("bert", "12.5")) == "bert       12.5"


def test_perf_analyzer_args(harness: ModuleType) -> None:
    args = harness.perf_analyzer_args(
        "m",
        "127.0.0.1:9",
        concurrency=4,
        window_ms=500,
        stability=10,
        max_trials=3,
        shapes={"input_ids": [-1], "fixed": [3], "pair": [2, -1]},
        seq_len=64,
        batch_size=2,
        extra=("-i", "grpc"),
    )
    assert " ".join(args) == (
        "-m m -u 127.0.0.1:9 --concurrency-range 4 --measurement-interval 500 "
        "--stability-percentage 10 --max-trials 3 --input-data zero -i grpc -b 2 "
        "--shape input_ids:64 --shape pair:2,64"
    )


def test_a_point_is_tried_again_and_each_failure_told(
    harness: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tries = tmp_path / "tries"
    script = tmp_path / "fake-perf-analyzer"
    script.write_text(
        f"#!/usr/bin/env bash\necho x >> {tries}\n"
        "echo 'Failed to obtain stable measurement within 3 windows'\nexit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(ENV_VAR, str(script))
    with pytest.raises(PerfAnalyzerFailed, match="stable measurement"):
        harness.perf_analyzer_point(["-m", "m"], attempts=2, label="HTTP c=1")
    assert tries.read_text().count("x") == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"  HTTP c=1 attempt {n}: Failed to obtain stable measurement within 3 windows"
        for n in (1, 2)
    ]


def test_v2_ready(harness: ModuleType, server: ServerProcess) -> None:
    assert harness.v2_ready(server.http_url, TINY)()
    assert not harness.v2_ready(server.http_url, "no_such_model")()
    assert not harness.v2_ready("127.0.0.1:9", TINY)()


def test_start_bertserve_waits_for_the_model(harness: ModuleType, tiny_repo: Path) -> None:
    with pytest.raises(LaunchError, match="started, but no_such_model is not ready"):
        harness.start_bertserve(tiny_repo, "no_such_model")
    with harness.start_bertserve(tiny_repo, TINY, args=["--allow-grpc", "false"]) as server:
        assert set(server.ports) == {"http", "metrics"}
    assert server.returncode == 0
