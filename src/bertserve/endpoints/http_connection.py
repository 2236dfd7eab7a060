"""HTTP/1.1 connections with limits: uvicorn's httptools protocol, guarded.

No client may hold the server's connections, memory or compute for as long as it likes:

- a request's headers must arrive within `header_timeout` of its first byte and its body
  within `body_timeout` of the headers (else 408 and the connection closes), so a client that
  trickles bytes cannot keep a connection;
- the request line and headers are at most `max_header_bytes` and `MAX_HEADERS` lines (431);
- at most `max_connections` are open: a new one beyond that closes the connection idle the
  longest (keep-alive or not yet used), and when none is idle it is refused at once with a 503
  that says why (`Retry-After`), so idle connections cannot lock clients out;
- a request whose client disconnects while the engine holds it is cancelled (its queued work
  is dropped, see Engine.infer).

A response goes out in one write where uvicorn makes two (the status line and headers, then
the body): `_HeadWithBody` holds the headers back for the body that must follow them, and
writes both at once (one `writev`, one TCP segment for a small reply).

uvicorn's protocol class is subclassed (its parser callbacks and `data_received`), so this
module follows uvicorn's: tests/frontends/test_protection.py covers every limit."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "CLIENT_GONE",
    "ConnectionLimits",
    "GuardedProtocol",
    "MAX_HEADERS",
    "WAITING_TASK",
    "guarded_protocol",
]

log = logging.getLogger("bertserve.http")

#: Header lines a request may carry.
MAX_HEADERS = 100
#: Scope keys: the task waiting on the engine, which the app leaves for cancellation, and
#: the mark that it was cancelled because the client went away.
WAITING_TASK = "bertserve.waiting"
CLIENT_GONE = "bertserve.client_gone"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float
    body_timeout: float
    keep_alive: float
    max_header_bytes: int


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}  # fmt: skip


def _refusal(status: int, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    retry = b"retry-after: 1\r\n" if status == 503 else b""
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
        b"content-type: application/json\r\n", retry,
        b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body), body,
    ])  # fmt: skip


class _HeadWithBody:
    """The transport as one request's response cycle sees it: the status line and headers
    are held back when a body must follow them (a Content-Length above zero, not HEAD) and
    written with the body's first bytes in one `writelines`. A dev-VM profile of the server
    at 256 connections had the two writes at 29% of the event loop's time (each a send, and
    on loopback the peer's receive, of its own). The interim 100 Continue (written before
    the response starts) and everything after the first body write pass straight through;
    `close` writes what is held first."""

    __slots__ = ("_transport", "_cycle", "_head", "_started")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle  # uvicorn's RequestResponseCycle
        self._head: bytes | None = None
        self._started = False  # the response's first write is done (or held)

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.writelines((head, data))
            return
        cycle = self._cycle
        if cycle.response_started and not self._started:
            self._started = True
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self._head = data
                return
        self._transport.write(data)

    def close(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under ConnectionLimits; `guarded_protocol` makes the
    class for one server (the limits and the idle connections are per server)."""

    limits: ClassVar[ConnectionLimits]
    #: Connections waiting for a request, the longest idle first (a dict keeps order).
    idle: ClassVar[dict[GuardedProtocol, None]]
    #: Per kind of refusal ("cap", "headers", "body"): when it was last logged, and how many
    #: since (a flood is logged once every 10 s, with its count, not once per connection).
    refused: ClassVar[dict[str, list[float]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        #: the part of a request being received ("headers", "body"; None between requests),
        #: and the part the timer is armed for ("idle": a connection not used yet)
        self._part: str | None = None
        self._timed: str | None = None
        self._raw_bytes = 0  # bytes received while the headers are incomplete

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            self._refuse_at_cap()
            return
        self.idle[self] = None
        self._arm(self.limits.keep_alive, None)
        self._timed = "idle"

    def connection_lost(self, exc: Exception | None) -> None:
        self.idle.pop(self, None)
        self._cancel_timer()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            scope = cast(dict[str, Any], cycle.scope)
            waiting = scope.get(WAITING_TASK)
            if waiting is not None:
                scope[CLIENT_GONE] = True
                waiting.cancel()  # drop its work; HttpApp returns quietly

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self.idle[self] = None  # and uvicorn's keep-alive timer runs

    def _evict_idle(self) -> bool:
        for victim in self.idle:
            if victim is not self:
                del self.idle[victim]
                victim.transport.close()
                return True
        return False

    def _refuse_at_cap(self) -> None:
        limit = self.limits.max_connections
        self.transport.write(
            _refusal(
                503,
                f"the server has its limit of {limit} connections open, none of them "
                "idle (--http-max-connections): retry later",
            )  # fmt: skip
        )
        self.transport.close()
        self._note("cap", f"{len(self.connections)} open, none idle (--http-max-connections)")

    def _note(self, kind: str, why: str) -> None:
        count = self.refused.setdefault(kind, [float("-inf"), 0])
        count[1] += 1
        now = time.monotonic()
        if now - count[0] >= 10:
            log.warning("refused %d connection(s): %s", count[1], why)
            count[:] = [now, 0]

    # -- timers -------------------------------------------------------------------------

    def _arm(self, timeout: float, part: str | None) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(timeout, self._expired, part)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, part: str | None) -> None:
        """The request's `part` ("headers", "body") did not arrive in time; None: an unused
        or keep-alive connection stayed idle, which closes without a word."""
        self._timer = None
        if self.transport.is_closing():
            return
        # While the body arrives, the app may have answered already (a 413 on Content-Length)
        answered = part == "body" and self.cycle is not None and self.cycle.response_started
        if part is not None and not answered:
            timeout = self.limits.header_timeout if part == "headers" else self.limits.body_timeout
            flag = f"--http-{part.rstrip('s')}-timeout-secs"
            message = f"the request's {part} did not arrive within {timeout:g} s ({flag})"
            self.transport.write(_refusal(408, message))
            self._note(part, message)
        self.transport.close()

    # -- parsing ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades (WebSocket) are not served here")
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.message)
            else:
                self._refuse(400, f"malformed HTTP request: {exc}")
            return
        part = self._part
        if part == "headers":
            self._raw_bytes += len(data)
            if self._raw_bytes > self.limits.max_header_bytes:
                self._refuse(431, self._too_large())
                return
        # Timers only for a request that did not arrive in one piece (the usual one did):
        # its part must then arrive within that part's timeout.
        if part != self._timed:
            self._timed = part
            if part is None:
                self._cancel_timer()
            else:
                limits = self.limits
                self._arm(limits.header_timeout if part == "headers" else limits.body_timeout, part)

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_timer()
        if not self.transport.is_closing():
            self.transport.write(_refusal(status, message))
            self.transport.close()

    def _too_large(self) -> str:
        return (
            f"the request line and headers exceed {self.limits.max_header_bytes} bytes "
            "(--http-max-header-size)"
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.idle.pop(self, None)
        self._part = "headers"
        self._raw_bytes = 0

    def on_headers_complete(self) -> None:
        # Counted once they are all in (a request that is still arriving is bounded by the
        # raw bytes in data_received): no override per header on the hot path.
        self._part = "body"
        headers = self.headers
        if len(headers) > MAX_HEADERS:
            raise _Refused(431, f"the request has more than {MAX_HEADERS} header lines")
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.limits.max_header_bytes:
            raise _Refused(431, self._too_large())
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:  # uvicorn made it for this request (its task starts later)
            cycle.transport = cast(asyncio.Transport, _HeadWithBody(self.transport, cycle))

    def on_message_complete(self) -> None:
        self._part = None
        super().on_message_complete()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class for one server (uvicorn's `http` setting)."""
    return type(
        "GuardedProtocol", (GuardedProtocol,), {"limits": limits, "idle": {}, "refused": {}}
    )
