"""`bertserve serve`'s flags for limits, access and TLS: each maps onto its setting, and a
value that cannot work is refused before anything starts, with what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertserve.cli import build_parser
from bertserve.commands.serve import settings_from_args
from bertserve.settings import Restriction, ServerSettings, TlsFiles


def _settings(*flags: str) -> ServerSettings:
    args = build_parser().parse_args(["serve", "--model-repository", "r", *flags])
    return settings_from_args(args)


def test_limits_map_onto_settings() -> None:
    defaults = _settings()
    assert defaults.default_max_queue_size == 1024 and defaults.strict_readiness
    given = _settings(
        "--http-max-connections", "10", "--grpc-max-connections", "11",
        "--http-header-timeout-secs", "0.5", "--http-body-timeout-secs", "2",
        "--http-keep-alive-secs", "3", "--http-max-header-size", "8192",
        "--grpc-stream-max-outstanding", "7", "--default-max-queue-size", "0",
        "--strict-readiness", "false",
    )  # fmt: skip
    assert (given.http_max_connections, given.grpc_max_connections) == (10, 11)
    assert (given.http_header_timeout_secs, given.http_body_timeout_secs) == (0.5, 2.0)
    assert (given.http_keep_alive_secs, given.http_max_header_size) == (3, 8192)
    assert given.grpc_stream_max_outstanding == 7 and given.default_max_queue_size == 0
    assert not given.strict_readiness


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--http-max-connections", "0"], "expected a whole number of 1 or more, got '0'"),
        (["--grpc-stream-max-outstanding", "-1"], "of 1 or more, got '-1'"),
        (["--default-max-queue-size", "-1"], "of 0 or more, got '-1'"),
        (["--http-header-timeout-secs", "0"], "0.001 or more, got '0'"),
        (["--http-body-timeout-secs", "nan"], "got 'nan'"),
        (["--http-restricted-api", "inference"], "expected API[,API]:KEY=VALUE"),
        (["--grpc-restricted-protocol", "infer:k=v"], "unknown API group(s) infer"),
    ],
)
def test_values_that_cannot_work_are_refused(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _settings(*flags)
    assert message in capsys.readouterr().err


def test_restrictions_as_tritonserver_writes_them() -> None:
    given = _settings(
        "--http-restricted-api", "model-repository,statistics:Admin-Key=a=b",
        "--http-restricted-api", "inference:k=v",
        "--grpc-restricted-protocol", "health:h=",
    )  # fmt: skip
    assert given.http_restricted_apis == [
        Restriction(frozenset({"model-repository", "statistics"}), "admin-key", "a=b"),
        Restriction(frozenset({"inference"}), "k", "v"),
    ]
    assert given.grpc_restricted_protocols == [Restriction(frozenset({"health"}), "h", "")]
    with pytest.raises(SystemExit, match="'inference' is restricted twice"):
        twice = ("--http-restricted-api", "inference:a=1", "--http-restricted-api", "inference:b=2")
        _settings(*twice)


def test_tls_flags() -> None:
    assert _settings().http_tls is None and _settings().grpc_tls is None
    given = _settings(
        "--grpc-use-ssl", "true", "--grpc-server-cert", "c.pem", "--grpc-server-key", "k.pem",
        "--http-use-ssl-mutual", "1", "--http-server-cert", "c", "--http-server-key", "k",
        "--http-root-cert", "ca",
    )  # fmt: skip
    assert given.grpc_tls == TlsFiles(Path("c.pem"), Path("k.pem"))
    assert given.http_tls == TlsFiles(Path("c"), Path("k"), Path("ca"), mutual=True)
    with pytest.raises(SystemExit, match="--http-use-ssl needs --http-server-cert and --http-"):
        _settings("--http-use-ssl", "on", "--http-server-cert", "c")
    with pytest.raises(SystemExit, match="--grpc-use-ssl-mutual needs --grpc-root-cert"):
        _settings("--grpc-use-ssl-mutual", "on", "--grpc-server-cert", "c",
                  "--grpc-server-key", "k")  # fmt: skip
