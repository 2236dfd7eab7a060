"""tritonserver's flags on `bertserve serve`: each is taken with its meaning, taken without
effect (and said so in the log), or refused with the reason; the log in Triton's layout."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest

from bertserve.cli import build_parser
from bertserve.commands import triton_flags
from bertserve.commands.serve import settings_from_args
from bertserve.server_log import LOG_LINE, TritonFormatter, configure_logging
from bertserve.settings import ServerSettings


def _args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "--model-repository", "r", *flags])


def _settings(*flags: str) -> ServerSettings:
    return settings_from_args(_args(*flags))


def _serve_flags() -> set[str]:
    parser = build_parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return {flag for action in serve._actions for flag in action.option_strings}


def test_every_tritonserver_flag_is_known() -> None:
    known = _serve_flags()
    missing = [f for f in triton_flags.TRITONSERVER_FLAGS if f not in known]
    assert not missing, f"tritonserver flags bertserve serve does not take: {missing}"


@pytest.mark.parametrize(
    ("flags", "field", "value"),
    [
        ((), "exit_on_error", True),
        (("--exit-on-error=false",), "exit_on_error", False),
        ((), "auto_complete_config", True),
        (("--disable-auto-complete-config",), "auto_complete_config", False),
        (("--strict-model-config=true",), "auto_complete_config", False),
        (("--strict-model-config=false",), "auto_complete_config", True),
        (("--strict-model-config=false", "--disable-auto-complete-config"),
         "auto_complete_config", False),
        (("--backend-config=onnxruntime,default-max-batch-size=16",), "backend_config",
         {"onnxruntime": {"default-max-batch-size": "16"}}),
        (("--backend-config", "default-max-batch-size=2"), "backend_config",
         {"": {"default-max-batch-size": "2"}}),
        (("--model-load-thread-count", "2"), "model_load_thread_count", 2),
        (("--model-load-retry-count=3",), "model_load_retry_count", 3),
        (("--model-config-name=h100",), "model_config_name", "h100"),
        (("--allow-client-shm=true",), "allow_client_shm", True),
        ((), "allow_client_shm", False),
        (("--http-address=127.0.0.2",), "http_address", "127.0.0.2"),
        (("--grpc-address", "::1"), "grpc_address", "::1"),
        (("--metrics-address=127.0.0.3",), "metrics_address", "127.0.0.3"),
        (("--reuse-grpc-port=1",), "reuse_grpc_port", True),
        (("--id=edge-7",), "server_id", "edge-7"),
        (("--log-info=false",), "log_info", False),
        (("--log-format=ISO8601",), "log_format", "ISO8601"),
        (("--log-file=/tmp/x.log",), "log_file", "/tmp/x.log"),
        ((), "grpc_max_message_size", 2**31 - 1),
        (("--grpc-keepalive-time=1000",), "grpc_keepalive_time_ms", 1000),
        (("--grpc-keepalive-permit-without-calls=true",), "grpc_keepalive_permit_without_calls",
         True),
        (("--grpc-max-connection-age=60000",), "grpc_max_connection_age_ms", 60000),
        (("--grpc-infer-response-compression-level=high",),
         "grpc_infer_response_compression_level", "high"),
        (("--repository-poll-secs=5",), "repository_poll_secs", 5.0),
        (("--exit-timeout-secs=3",), "exit_timeout_secs", 3.0),
        (("--allow-gpu-metrics=false",), "allow_gpu_metrics", False),
        (("--model-store", "r2"), "model_repositories", [Path("r"), Path("r2")]),
        (("--allow-cpu-metrics=false",), "allow_cpu_metrics", False),
        (("--allow-gpu-metrics=false",), "allow_gpu_metrics", False),
        (("--metrics-config=summary_latencies=true",), "metrics_summary_latencies", True),
    ],
)  # fmt: skip
def test_flags_with_tritonservers_meaning(
    flags: tuple[str, ...], field: str, value: object
) -> None:
    assert getattr(_settings(*flags), field) == value


@pytest.mark.parametrize(
    "flags",
    [
        ("--backend-config=onnxruntime,enable-global-threadpool=1",),
        ("--backend-config=onnxruntime,default-max-batch-size=big",),
        ("--load-model=*", "--load-model=a"),
    ],
)
def test_flag_values_refused_with_the_reason(flags: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as info:
        _settings(*flags)
    assert str(info.value)  # a sentence, not just a code


@pytest.mark.parametrize(
    "flags",
    [
        ("--http-thread-count=8",),
        ("--grpc-infer-allocation-pool-size=16",),
        ("--backend-directory=/opt/tritonserver/backends",),
        ("--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"),
    ],
)
def test_flags_without_effect_are_taken_and_noted(flags: tuple[str, ...]) -> None:
    notes = triton_flags.check(_args(*flags))
    assert len(notes) == len(flags)
    assert all("accepted without effect" in note for note in notes)


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        (("--trace-config=level=TIMESTAMPS",), True),
        (("--trace-level=OFF",), False),
        (("--cache-config=local,size=1048576",), True),
        (("--response-cache-byte-size=0",), False),
        (("--rate-limit=execution_count",), True),
        (("--rate-limit=off",), False),
        (("--allow-sagemaker=true",), True),
        (("--allow-sagemaker=false",), False),
        (("--model-namespacing=true",), True),
        (("--model-namespacing=false",), False),
    ],
)
def test_absent_features_are_refused_unless_asked_off(
    flags: tuple[str, ...], refused: bool
) -> None:
    if refused:
        with pytest.raises(SystemExit, match="is not supported by bertserve: .+docs/triton"):
            triton_flags.check(_args(*flags))
    else:
        assert triton_flags.check(_args(*flags)) == []


def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("bertserve.engine", level, "/x/core.py", 42, message, (), None)


def test_log_lines_in_tritons_layouts() -> None:
    line = TritonFormatter().format(_record(logging.ERROR, "failed to load 'm'"))
    assert re.match(r"^E\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ core\.py:42\] failed to load 'm'$", line)
    assert LOG_LINE.match(line)
    iso = TritonFormatter(iso8601=True).format(_record(logging.WARNING, "careful"))
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ W \d+ core\.py:42\] careful$", iso)


def test_log_levels_switch_on_and_off_and_go_to_a_file(tmp_path: Path, root_logging: None) -> None:
    target = tmp_path / "server.log"
    configure_logging(ServerSettings(log_file=str(target), log_info=False))
    log = logging.getLogger("bertserve.test")
    log.info("hidden")
    log.warning("shown warning")
    log.error("shown error")
    log.debug("hidden too")
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = target.read_text().splitlines()
    assert [line[0] for line in lines] == ["W", "E"]
    assert lines[1].endswith("shown error")
