"""Transports are picked by protocol name; the URL rules every transport shares."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bertserve.perf.grpc_transport import GrpcTransport
from bertserve.perf.http_transport import HttpTransport
from bertserve.perf.protocols import TRANSPORTS, open_transport
from bertserve.perf.transport import TransportError, split_url


@pytest.mark.parametrize(("protocol", "kind"), [("http", HttpTransport), ("grpc", GrpcTransport)])
def test_transports_by_name(protocol: str, kind: type) -> None:
    transport = open_transport(protocol, "127.0.0.1:8123", "m", "2")
    assert type(transport) is kind
    assert (transport.url, transport.model, transport.version) == ("127.0.0.1:8123", "m", "2")


def test_an_unknown_protocol_names_the_known_ones() -> None:
    with pytest.raises(TransportError, match=r"unknown protocol 'udp': use -i http or -i grpc"):
        open_transport("udp", "127.0.0.1:8000", "m", "")
    assert sorted(TRANSPORTS) == ["grpc", "http"]


def test_http_runs_never_load_grpc() -> None:
    code = (
        "import sys; from bertserve.perf.protocols import open_transport; "
        "open_transport('http', '127.0.0.1:8000', 'm', ''); "
        "assert 'grpc' not in sys.modules and 'bertserve.perf.grpc_transport' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("http://localhost:9000/", ("localhost", 9000)),
        ("localhost", ("localhost", 7)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", 7)),
    ],
)
def test_split_url(url: str, expected: tuple[str, int]) -> None:
    assert split_url(url, default_port=7) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [("host:9000/v2", "without a path"), ("host:http", "the port must be a number")],
)
def test_split_url_refuses(url: str, message: str) -> None:
    with pytest.raises(TransportError, match=message):
        split_url(url, default_port=7)
