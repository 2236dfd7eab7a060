"""A small HTTP/1.1 client on persistent asyncio connections, parsed with httptools.

Each request is a pre-built byte string (request line, headers and binary-tensor body, encoded
once per input set with the server's own codec), so sending costs one `transport.write`; only
the status of a load response is read, not its body. Far cheaper per request than a general
client, which matters when the load generator shares two cores with the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, cast

import httptools
import numpy as np
import orjson

from bertserve.perf.shared_memory import Placed
from bertserve.perf.transport import Connection, Outcome, Transport, TransportError, split_url
from bertserve.protocol.http_codec import HEADER_LENGTH, decode_response, encode_request
from bertserve.tensors import numpy_to_datatype

__all__ = ["HttpConnection", "HttpTransport"]


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self._first_byte_ns = 0
        self._keep = False
        self._body: list[bytes] = []
        self._headers: dict[str, str] = {}
        self.lost = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._first_byte_ns:
            self._first_byte_ns = time.perf_counter_ns()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self._keep:
            self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if self._keep:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            # "Connection: close" (a proxy's per-connection request limit, say): the server
            # closes next; the following request goes on a new connection.
            self.lost = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def send(self, data: bytes) -> tuple[int, int, int]:
        """Status, client send ns and client receive ns of one request (raw bytes)."""
        if self.lost or self._transport is None:
            raise ConnectionError("the connection is closed")
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._first_byte_ns = 0
        start = time.perf_counter_ns()
        self._transport.write(data)
        sent = time.perf_counter_ns()
        status = await waiter
        done = time.perf_counter_ns()
        self._waiter = None
        return status, sent - start, done - (self._first_byte_ns or done)

    async def fetch(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of one request (control calls, not the hot path)."""
        self._keep, self._body, self._headers = True, [], {}
        try:
            status, _, _ = await self.send(data)
            return status, self._headers, b"".join(self._body)
        finally:
            self._keep = False

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _LoadConnection(Connection):
    __slots__ = ("_conn", "_transport")

    def __init__(self, conn: HttpConnection, transport: HttpTransport) -> None:
        self._conn = conn
        self._transport = transport

    async def infer(self, payload: Any) -> Outcome:
        if self._conn.lost:  # closed by the server between requests: open another, as clients do
            self._conn.close()
            self._conn = await self._transport._open()
        status, send_ns, recv_ns = await self._conn.send(payload)
        return status == 200, send_ns, recv_ns

    def close(self) -> None:
        self._conn.close()


class HttpTransport(Transport):
    def __init__(self, url: str, model: str, version: str) -> None:
        super().__init__(url, model, version)
        self.host, self.port = split_url(url, default_port=8000)
        self._host_header = f"{self.host}:{self.port}"
        prefix = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        self._model_path = prefix
        self._control: HttpConnection | None = None

    async def _open(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(HttpConnection, self.host, self.port)
        except OSError as exc:
            raise TransportError(
                f"cannot connect to {self.host}:{self.port} over HTTP: {exc.strerror or exc}; "
                "is the server running, and is -u its HTTP port?"
            ) from None
        return conn

    async def start(self) -> None:
        self._control = await self._open()

    def _request(self, method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
        user = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n{user}{extra}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("latin-1") + body

    async def _control_call(self, method: str, path: str, body: bytes = b"") -> bytes:
        """One control request on the kept connection (reopened when the server closed it):
        the reply's body, or TransportError with the server's message."""
        if self._control is None or self._control.lost:
            self._control = await self._open()
        extra = "Content-Type: application/json\r\n" if body else ""
        status, _, reply = await self._control.fetch(self._request(method, path, body, extra))
        if status != 200:
            message = _error_of(reply) or f"HTTP {status}"
            raise TransportError(f"{method} {path}: HTTP {status}: {message}")
        return reply

    async def _get_json(self, path: str) -> dict[str, Any]:
        body = await self._control_call("GET", path)
        return dict(orjson.loads(body)) if body else {}

    async def model_metadata(self) -> dict[str, Any]:
        return await self._get_json(self._model_path)

    async def max_batch_size(self) -> int:
        config = await self._get_json(self._model_path + "/config")
        return int(config.get("max_batch_size", 0))

    async def statistics(self) -> dict[str, Any]:
        return await self._get_json(self._model_path + "/stats")

    def prepare(
        self, inputs: dict[str, np.ndarray], placed: Mapping[str, Placed] | None = None
    ) -> bytes:
        if placed is not None:
            return self._request("POST", self._model_path + "/infer", _placed_body(inputs, placed))
        body, json_length = encode_request(inputs, binary_inputs=True, binary_outputs=True)
        extra = "Content-Type: application/octet-stream\r\n"
        if json_length is not None:
            extra += f"{HEADER_LENGTH}: {json_length}\r\n"
        return self._request("POST", self._model_path + "/infer", body, extra)

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> None:
        body = orjson.dumps({"key": key, "offset": 0, "byte_size": byte_size})
        await self._control_call("POST", f"/v2/systemsharedmemory/region/{name}/register", body)

    async def unregister_system_shared_memory(self, name: str) -> None:
        await self._control_call("POST", f"/v2/systemsharedmemory/region/{name}/unregister")

    async def check(
        self, inputs: dict[str, np.ndarray], placed: Mapping[str, Placed] | None = None
    ) -> None:
        conn = await self._open()
        try:
            status, headers, body = await conn.fetch(self.prepare(inputs, placed))
        finally:
            conn.close()
        if status != 200:
            message = _error_of(body)
            raise TransportError(
                f"the server refused a request to '{self.model}': HTTP {status}: {message}"
            )
        length = headers.get(HEADER_LENGTH)
        decode_response(body, int(length) if length is not None else None)

    async def connect(self) -> Connection:
        return _LoadConnection(await self._open(), self)

    async def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None


def _placed_body(inputs: Mapping[str, np.ndarray], placed: Mapping[str, Placed]) -> bytes:
    """A JSON request whose tensors all lie in shared memory (no binary part)."""
    doc = {
        "inputs": [
            {
                "name": name,
                "datatype": numpy_to_datatype(array.dtype),
                "shape": list(array.shape),
                "parameters": placed[name].parameters(),
            }
            for name, array in inputs.items()
        ],
        "outputs": [
            {"name": name, "parameters": where.parameters()}
            for name, where in placed.items()
            if name not in inputs
        ],
    }
    return orjson.dumps(doc)


def _error_of(body: bytes) -> str:
    """The server's error message in a JSON reply, or the start of whatever it sent."""
    try:
        return str(orjson.loads(body).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace")
