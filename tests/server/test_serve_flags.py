"""`bertserve serve` flags that map onto settings outside tritonserver's set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bertserve.cli import build_parser
from bertserve.commands.serve import settings_from_args
from bertserve.malloc import keep_freed_memory
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


def test_malloc_keep_defaults_to_1024_mb_and_0_keeps_glibc_s() -> None:
    assert _settings().malloc_keep_mb == 1024
    assert _settings("--malloc-keep-mb", "0").malloc_keep_mb == 0


# 4096 MiB in bytes would reach mallopt's C int as 0: keep nothing, the opposite of the ask.
@pytest.mark.parametrize("value", ["-1", "2048", "4096"])
def test_malloc_keep_outside_a_c_int_is_a_clear_exit(tmp_path: Path, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bertserve", "serve", "--model-repository", str(tmp_path),
         "--malloc-keep-mb", value],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--malloc-keep-mb must be 0 (glibc's default) to 2047" in done.stderr


def test_keep_freed_memory_refuses_what_a_c_int_cannot_hold() -> None:
    with pytest.raises(ValueError, match="not a C int"):
        keep_freed_memory(4096 << 20)


# Stacks a batch of 64 requests (three 786 KB arrays) 50 times and prints the page faults.
_BATCHES = """
import resource, sys
import numpy as np
from bertserve.malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory(1 << 30)
requests = [np.ones((4, 384), np.int64) for _ in range(64)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    batch = [np.concatenate(requests) for _ in range(3)]
    del batch
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _BATCHES, mode], capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_memory_spares_each_batch_its_page_faults() -> None:
    # glibc's default gives the arrays back after every batch: hundreds of faults a batch.
    assert _faults("default") > 50 * 100
    assert _faults("keep") < 50 * 20


def test_allow_flags_read_the_same_words_as_config_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _settings("--allow-grpc", "off").allow_grpc is False
    assert _settings("--allow-http", " YES ").allow_http is True
    with pytest.raises(SystemExit):
        _settings("--allow-metrics", "maybe")
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err
