"""`bertserve.server.Server` in this process: the ports it reports, what it refuses, and a
stop that drains the requests in flight over both protocols."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import tritonclient.http.aio as aiohttpclient

from bertserve.errors import ConfigError
from bertserve.server import Server
from tests.conftest import TINY, copy_model
from tests.frontends.conftest import SLOW, running, settings, url
from tests.frontends.protocols import PROTOCOLS, InFlight, feed, inputs


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_reports_the_free_ports_it_took_and_frees_them_on_stop(tiny_repo: Path) -> None:
    async with Server(settings(tiny_repo)) as server:
        assert set(server.ports) == {"http", "grpc", "metrics"}
        assert len(set(server.ports.values())) == 3 and 0 not in server.ports.values()
        client = aiohttpclient.InferenceServerClient(url(server, "http"))
        try:
            assert await client.is_model_ready(TINY)
            result = await client.infer(TINY, inputs(aiohttpclient, feed()))
            assert result.as_numpy("start_logits").shape == (1, 16)
        finally:
            await client.close()
    assert all(_refused(port) for port in server.ports.values()), server.ports
    await server.stop()  # a second stop is harmless


async def test_services_left_off_take_no_port(tmp_path: Path) -> None:
    config = settings(tmp_path, allow_grpc=False, allow_metrics=False)
    async with Server(config) as server:
        assert set(server.ports) == {"http"}


@pytest.mark.parametrize(("service", "name"), [("http", "HTTP"), ("grpc", "gRPC"),
                                             ("metrics", "metrics")])  # fmt: skip
async def test_a_taken_port_is_a_clear_exit_and_nothing_stays_bound(
    tmp_path: Path, service: str, name: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(settings(tmp_path, **{f"{service}_port": port}))
        message = f"cannot bind {name} to 127.0.0.1:{port}: .*choose another --{service}-port"
        with pytest.raises(SystemExit, match=message):
            await server.start()
    assert all(_refused(p) for p in server.ports.values()), server.ports


async def test_an_unreadable_repository_fails_the_start(tmp_path: Path) -> None:
    server = Server(settings(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="does not exist or is not a folder"):
        async with server:
            pass
    assert server.ports and all(_refused(p) for p in server.ports.values())


def test_stop_finishes_the_requests_in_flight_over_both_protocols(
    tiny_repo: Path, tmp_path: Path
) -> None:
    copy_model(tiny_repo, TINY, tmp_path / "repo", "slow", SLOW)
    with running(settings(tmp_path / "repo")) as server:
        requests = InFlight({p: url(server, p) for p in PROTOCOLS}, "slow")
        time.sleep(0.5)  # requests are waiting in the 1.5 s batching window
    assert requests.results() == [(1, 16)] * 6
