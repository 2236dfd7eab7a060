"""`bertserve serve` flags that map onto settings outside tritonserver's set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bertserve.cli import build_parser
from bertserve.commands.serve import settings_from_args
from bertserve.settings import ServerSettings


def _settings(*flags: str) -> ServerSettings:
    args = build_parser().parse_args(["serve", "--model-repository", "r", *flags])
    return settings_from_args(args)


def test_gil_switch_interval_defaults_to_100_us_and_0_keeps_python_s() -> None:
    assert _settings().gil_switch_interval_us == 100
    assert _settings("--gil-switch-interval-us", "0").gil_switch_interval_us == 0
    assert _settings("--gil-switch-interval-us", "250").gil_switch_interval_us == 250


def test_negative_gil_switch_interval_is_a_clear_exit(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bertserve", "serve", "--model-repository", str(tmp_path),
         "--gil-switch-interval-us", "-5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--gil-switch-interval-us must be 0" in done.stderr


def test_allow_flags_read_the_same_words_as_config_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _settings("--allow-grpc", "off").allow_grpc is False
    assert _settings("--allow-http", " YES ").allow_http is True
    with pytest.raises(SystemExit):
        _settings("--allow-metrics", "maybe")
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err
