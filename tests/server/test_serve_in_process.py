"""`bertserve serve`'s lifecycle in this process (tests/e2e/ runs it as a child): the start-up
lines, SIGTERM's drain, exit status 1 when a model fails at start-up (tritonserver's
--exit-on-error), and tritonserver's warnings for the deprecated --strict-model-config."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from bertserve.announce import READY_LINE
from bertserve.cli import build_parser
from bertserve.commands import serve as serve_command
from bertserve.server import serve
from bertserve.settings import ServerSettings


def _settings(repository: Path, **changes: object) -> ServerSettings:
    fields: dict[str, object] = dict(
        model_repositories=[repository], http_port=0, grpc_port=0, metrics_port=0
    )
    fields.update(changes)
    return ServerSettings(**fields)  # type: ignore[arg-type]


def _broken(repository: Path) -> Path:
    (repository / "broken").mkdir(parents=True)
    (repository / "broken" / "config.pbtxt").write_text("max_batch_size: -1\n")
    return repository


async def test_serves_until_sigterm_then_drains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(serve(_settings(tmp_path, allow_metrics=False)))
    try:
        printed = ""
        for _ in range(500):
            printed += capsys.readouterr().out
            if READY_LINE in printed or task.done():
                break
            await asyncio.sleep(0.02)
        assert READY_LINE in printed
        assert "Started HTTPService at" in printed and "Started GRPCInferenceService" in printed
        os.kill(os.getpid(), signal.SIGTERM)  # serve() handles it on this loop
        assert await asyncio.wait_for(task, 30) == 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    assert "bertserve stopped" in capsys.readouterr().out


async def test_a_model_that_fails_at_start_up_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.get_running_loop()
    try:
        code = await asyncio.wait_for(serve(_settings(_broken(tmp_path), allow_metrics=False)), 60)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    assert code == 1
    captured = capsys.readouterr()
    assert READY_LINE not in captured.out and "bertserve stopped" in captured.out
    assert "cannot serve: failed to load 'broken'" in captured.err
    assert "--exit-on-error=false" in captured.err


def test_run_reads_the_flags_and_reports_the_failure(
    tmp_path: Path, root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(
        ["serve", "--model-repository", str(_broken(tmp_path)), "--http-port", "0",
         "--grpc-port", "0", "--allow-metrics", "false", "--strict-model-config", "false",
         "--disable-auto-complete-config", "--log-file", str(tmp_path / "log.txt")]
    )  # fmt: skip
    assert serve_command.run(args) == 1
    for handler in logging.getLogger().handlers:
        handler.flush()
    log = (tmp_path / "log.txt").read_text()
    assert "Warning: '--strict-model-config' has been deprecated!" in log
    assert "Overriding deprecated '--strict-model-config' from False to True" in log
    assert "bertserve serve: cannot serve: failed to load 'broken'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "auto_complete", "warnings"),
    [
        ([], True, 0),
        (["--strict-model-config", "true"], False, 1),
        (["--strict-model-config", "false"], True, 1),
        (["--strict-model-config", "false", "--disable-auto-complete-config"], False, 2),
    ],
)
def test_strict_model_config_is_tritonservers_deprecated_flag(
    flags: list[str], auto_complete: bool, warnings: int
) -> None:
    args = build_parser().parse_args(["serve", "--model-repository", "r", *flags])
    assert serve_command.settings_from_args(args).auto_complete_config is auto_complete
    assert len(serve_command._deprecation_warnings(args)) == warnings
