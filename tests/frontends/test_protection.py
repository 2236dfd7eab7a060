"""Nothing one client does holds what others need: connections that trickle or idle are
closed, a connection cap refuses clearly instead of exhausting descriptors, headers are
bounded, a full queue refuses at once and says when to come back, work whose client has gone
is dropped, and a gRPC stream whose client never reads stops being read."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from bertserve.endpoints.grpc import start_grpc_server
from bertserve.endpoints.http_connection import MAX_HEADERS
from bertserve.messages import InferOutput, InferRequest, InferResponse
from bertserve.protocol.grpc_codec import encode_request
from bertserve.server import Server
from bertserve.settings import ServerSettings
from tests.conftest import TINY, copy_model
from tests.frontends.conftest import SLOW, running, settings, url
from tests.frontends.messages import good, json_body
from tests.frontends.protocols import PROTOCOLS, Client, feed
from tests.frontends.together import Together

CAP = 4  # HTTP connections
HEADER_BYTES = 4096
LIMITS = {
    "http_max_connections": CAP,
    "http_header_timeout_secs": 0.5,
    "http_body_timeout_secs": 0.5,
    "http_keep_alive_secs": 1,
    "http_max_header_size": HEADER_BYTES,
    "default_max_queue_size": 2,
}
# A 1.5 s batching window (as SLOW): a request waits in the queue that long.
_FULL_AT_ONE = 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n' + (
    "dynamic_batching { max_queue_delay_microseconds: 1500000 "
    "default_queue_policy { max_queue_size: 1 } }\n"
)
GOOD = json_body(good())


@pytest.fixture(scope="module")
def guarded(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("protection") / "repo"
    copy_model(tiny_repo, TINY, repo, "slow", SLOW)  # bounded by --default-max-queue-size
    copy_model(tiny_repo, TINY, repo, "full_at_one", _FULL_AT_ONE)
    with running(settings(repo, **LIMITS)) as server:
        yield server


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=20)


def _reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, dict(response.getheaders()), response.read()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _request(path: str = "/v2/health/live", body: bytes = b"", extra: str = "") -> bytes:
    method = "POST" if body else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def _get(server: Server, path: str = "/v2/health/live") -> tuple[int, dict[str, str], bytes]:
    with _connect(server) as sock:
        sock.sendall(_request(path))
        return _reply(sock)


# -- slow, idle and too many connections ------------------------------------------------------


def test_headers_that_trickle_get_408_and_the_connection_closes(
    guarded: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with _connect(guarded) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # never finished
        status, headers, body = _reply(sock)
        assert status == 408 and headers["connection"] == "close"
        message = orjson.loads(body)["error"]
        assert message == (
            "the request's headers did not arrive within 0.5 s (--http-header-timeout-secs)"
        )
        assert _closed(sock)
    # the server says so too (once per kind every 10 s: a flood is one line with its count)
    assert f"refused 1 connection(s): {message}" in caplog.text


def test_a_body_that_trickles_gets_408(guarded: Server) -> None:
    with _connect(guarded) as sock:
        sock.sendall(_request("/v2/models/slow/infer", GOOD)[: -len(GOOD) // 2])
        status, _, body = _reply(sock)
        assert status == 408 and "(--http-body-timeout-secs)" in orjson.loads(body)["error"]
        assert _closed(sock)


def test_keep_alive_continues_between_requests_then_an_idle_connection_closes(
    guarded: Server,
) -> None:
    with _connect(guarded) as sock:
        for _ in range(3):
            sock.sendall(_request())
            assert _reply(sock)[0] == 200
        assert _closed(sock)  # after --http-keep-alive-secs without a request
    with _connect(guarded) as unused:
        assert _closed(unused)  # a connection never used is idle too


def test_past_the_cap_the_longest_idle_connection_makes_room(guarded: Server) -> None:
    idle = [_connect(guarded) for _ in range(CAP)]
    try:
        time.sleep(0.1)  # the server has taken them
        assert _get(guarded)[0] == 200  # a newcomer is served...
        assert _closed(idle[0])  # ...in the place of the connection idle the longest
    finally:
        for sock in idle:
            sock.close()


def test_past_the_cap_with_none_idle_a_newcomer_is_refused_clearly(guarded: Server) -> None:
    busy = [_connect(guarded) for _ in range(CAP)]
    try:
        for sock in busy:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # each one mid-request
        time.sleep(0.1)
        status, headers, body = _get(guarded)
        assert status == 503 and headers["retry-after"] == "1"
        assert orjson.loads(body)["error"] == (
            f"the server has its limit of {CAP} connections open, none of them idle "
            "(--http-max-connections): retry later"
        )
    finally:
        for sock in busy:
            sock.close()
    deadline = time.monotonic() + 10  # the busy ones' closes reach the server
    while _get(guarded)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _get(guarded)[0] == 200


# -- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (f"X-Big: {'a' * HEADER_BYTES}\r\n",
         f"exceed {HEADER_BYTES} bytes (--http-max-header-size)"),
        ("".join(f"X-{i}: 1\r\n" for i in range(MAX_HEADERS)),
         f"more than {MAX_HEADERS} header lines"),
    ],
    ids=["size", "count"],
)  # fmt: skip
def test_headers_are_bounded_in_size_and_count(guarded: Server, extra: str, message: str) -> None:
    with _connect(guarded) as sock:
        sock.sendall(_request(extra=extra))
        status, _, body = _reply(sock)
        assert status == 431 and message in orjson.loads(body)["error"]


def test_a_header_that_never_ends_is_refused_once_past_the_limit(guarded: Server) -> None:
    with _connect(guarded) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Endless: ")
        with pytest.raises(OSError):  # the server closes as soon as the limit is passed
            for _ in range(64):
                sock.sendall(b"a" * HEADER_BYTES)
                time.sleep(0.01)
        assert _reply(sock)[0] == 431


def test_replies_do_not_name_the_server_software(guarded: Server) -> None:
    status, headers, _ = _get(guarded)
    assert status == 200 and "server" not in {k.lower() for k in headers}


# -- overload: bounded queues, refusals at once and with Retry-After --------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("model", "bound"),
    [("full_at_one", "max_queue_size"), ("slow", "--default-max-queue-size")],
)
def test_a_full_queue_refuses_at_once_and_says_when_to_retry(
    guarded: Server, protocol: str, model: str, bound: str
) -> None:
    size = 1 if model == "full_at_one" else LIMITS["default_max_queue_size"]

    def call() -> object:
        with Client(protocol, url(guarded, protocol)) as client:
            return client.infer(model, client.inputs(feed())).as_numpy("start_logits").shape

    done = Together([call] * (size + 1)).outcomes()
    refused = [(at, o) for at, (_, o) in enumerate(done) if isinstance(o, Exception)]
    assert len(refused) == 1, done
    at, error = refused[0]
    assert at == 0, "the refusal came after a request that waited in the queue"
    assert isinstance(error, InferenceServerException)
    assert error.status() == ("503" if protocol == "http" else "StatusCode.UNAVAILABLE")
    assert "queue is full" in str(error.message()) and bound in str(error.message())
    assert sorted(o for _, o in done if not isinstance(o, Exception)) == [(1, 16)] * size


def test_a_refusal_carries_retry_after_on_both_protocols(guarded: Server) -> None:
    waiting = Together([lambda: _http_infer(guarded, "full_at_one")])
    time.sleep(0.3)  # it waits in the 1.5 s batching window: the queue is full
    status, headers, _ = _http_infer(guarded, "full_at_one")
    assert status == 503 and headers["retry-after"] == "1"
    request = encode_request("full_at_one", feed())
    with (
        grpc.insecure_channel(url(guarded, "grpc")) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("grpc-retry-pushback-ms", "1000") in info.value.trailing_metadata()
    assert [o[0] for _, o in waiting.outcomes()] == [200]


def _http_infer(server: Server, model: str) -> tuple[int, dict[str, str], bytes]:
    body = json_body(good())
    with _connect(server) as sock:
        sock.sendall(_request(f"/v2/models/{model}/infer", body))
        return _reply(sock)


# -- work whose client has gone ------------------------------------------------------------


def _executions(server: Server) -> tuple[int, int]:
    with Client("grpc", url(server, "grpc")) as client:
        stats = client.statistics("slow").model_stats[0]
        return stats.execution_count, stats.inference_stats.fail.count


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_whose_client_has_gone_is_not_run(guarded: Server, protocol: str) -> None:
    executed, failed = _executions(guarded)
    if protocol == "http":
        with _connect(guarded) as sock:
            sock.sendall(_request("/v2/models/slow/infer", GOOD))
            time.sleep(0.3)  # queued, waiting out the 1.5 s batching window
    else:
        request = encode_request("slow", feed())
        with grpc.insecure_channel(url(guarded, "grpc")) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=0.3)  # the client gives up: grpc cancels the call
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while _executions(guarded)[1] == failed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _executions(guarded)[1] == failed + 1  # recorded as a failure (canceled)
    time.sleep(1.6)  # past the batching window: the request would have run by now
    assert _executions(guarded)[0] == executed


# -- a gRPC stream whose client never reads ------------------------------------------------

OUTSTANDING = 4
REPLY = 256 * 1024  # bytes per reply: a few fill the client's receive window


class Counting:
    """A stand-in engine: counts the requests it is given and answers each with REPLY bytes."""

    def __init__(self) -> None:
        self.calls = 0

    async def infer(self, request: InferRequest) -> InferResponse:
        self.calls += 1
        data = np.zeros(REPLY, np.uint8)
        return InferResponse("m", "1", [InferOutput("y", "UINT8", data.shape, data)])


@pytest.fixture()
async def counting() -> AsyncIterator[tuple[Counting, Any]]:
    engine = Counting()
    config = ServerSettings(grpc_port=0, grpc_stream_max_outstanding=OUTSTANDING)
    server, port = await start_grpc_server(engine, config)  # type: ignore[arg-type]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield engine, service_pb2_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


async def test_a_stream_whose_client_never_reads_stops_being_read(counting: Any) -> None:
    engine, stub = counting
    call = stub.ModelStreamInfer()
    request = service_pb2.ModelInferRequest.FromString(
        encode_request("m", {"x": np.zeros((1, 4), np.int64)})
    )
    sent = 200

    async def send() -> None:
        for _ in range(sent):
            await call.write(request)

    writer = asyncio.create_task(send())
    await asyncio.sleep(1.0)
    held = engine.calls
    await asyncio.sleep(0.5)
    # the client's window holds a few replies, the server's bound a few more; then nothing
    assert engine.calls == held < sent // 4, (held, sent)
    replies = 0
    async for _ in call:  # the client reads at last: everything is answered
        replies += 1
        if replies == sent:
            break
    await writer
    assert replies == sent and engine.calls == sent
    call.cancel()
