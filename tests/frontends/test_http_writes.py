"""A response in one write: the status line and headers held back for the body that must
follow them (`http_connection._HeadWithBody`), and every case where nothing follows or the
client waits in between written at once: the interim 100 Continue, HEAD, empty and chunked
bodies, a connection closed with the headers held."""

from __future__ import annotations

import http.client
import socket
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from bertserve.endpoints.http_connection import _HeadWithBody
from bertserve.server import Server


class Recording:
    """A transport that records what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, parts: Any) -> None:
        self.calls.append(("writelines", tuple(parts)))

    def close(self) -> None:
        self.calls.append(("close",))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def _cycle(method: str = "POST", length: int = 5, chunked: bool | None = False) -> Any:
    return SimpleNamespace(
        response_started=False, chunked_encoding=chunked, expected_content_length=length,
        scope={"method": method},
    )  # fmt: skip


def test_the_headers_go_out_with_the_body_in_one_call() -> None:
    transport, cycle = Recording(), _cycle()
    writer = _HeadWithBody(transport, cycle)  # type: ignore[arg-type]
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response: at once
    cycle.response_started = True
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")  # held
    assert transport.calls == [("write", b"HTTP/1.1 100 Continue\r\n\r\n")]
    writer.write(b"hello")
    writer.write(b"more")  # (a body in parts: the rest passes through)
    assert transport.calls[1:] == [
        ("writelines", (b"HTTP/1.1 200 OK\r\n\r\n", b"hello")), ("write", b"more")
    ]  # fmt: skip


@pytest.mark.parametrize(
    "cycle",
    [_cycle(method="HEAD"), _cycle(length=0), _cycle(chunked=True)],
    ids=["head", "empty", "chunked"],
)
def test_headers_that_no_body_must_follow_go_out_at_once(cycle: Any) -> None:
    transport = Recording()
    writer = _HeadWithBody(transport, cycle)  # type: ignore[arg-type]
    cycle.response_started = True
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\n")]


def test_closing_writes_the_held_headers_first() -> None:
    transport, cycle = Recording(), _cycle()
    writer = _HeadWithBody(transport, cycle)  # type: ignore[arg-type]
    cycle.response_started = True
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writer.close()
    assert transport.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\n"), ("close",)]
    assert writer.is_closing()


# -- over a socket, against the server ----------------------------------------------------


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10)


def _reply(sock: socket.socket, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    return response.status, dict(response.getheaders()), response.read()


def test_responses_follow_each_other_on_one_connection(served: Server) -> None:
    with _connect(served) as sock:
        for _ in range(3):
            sock.sendall(b"GET /v2/models/tiny/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _reply(sock)[0] == 200
        sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _reply(sock)
        assert status == 200 and int(headers["content-length"]) == len(body) > 0
        assert orjson.loads(body)["name"]


def test_a_head_request_gets_headers_and_the_connection_serves_on(served: Server) -> None:
    with _connect(served) as sock:
        sock.sendall(b"HEAD /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = _reply(sock, method="HEAD")
        assert body == b"" and status in (200, 405)
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _reply(sock)[0] == 200


def test_a_client_that_waits_for_100_continue_gets_it_before_sending_the_body(
    served: Server,
) -> None:
    data = {"input_ids": [101, 7, 8, 102], "attention_mask": [1, 1, 1, 1],
            "token_type_ids": [0, 0, 0, 0]}  # fmt: skip
    body = orjson.dumps({"inputs": [
        {"name": name, "datatype": "INT64", "shape": [1, 4], "data": values}
        for name, values in data.items()
    ]})  # fmt: skip
    head = (
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    with _connect(served) as sock:
        sock.sendall(head.encode())
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):  # the server asks for the body ...
            chunk = sock.recv(64)
            assert chunk, "the connection closed before 100 Continue"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)  # ... and answers it
        status, _, answer = _reply(sock)
        assert status == 200, answer
        assert {o["name"] for o in orjson.loads(answer)["outputs"]} == {
            "start_logits", "end_logits"
        }  # fmt: skip
