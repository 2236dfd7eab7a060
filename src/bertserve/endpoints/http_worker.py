"""An HTTP worker process (`bertserve serve --http-workers N`): HTTP in a process of its own,
beside the engine's.

The worker accepts connections on the listening socket it inherits from the engine's
process, under the same limits (`http_service.uvicorn_config`). It reads and decodes each
infer request itself (the HTTP parsing, the JSON inference header, the binary tensors, the
decompression) and hands the decoded request to the engine's process over its channel
(`http_bridge.py`); the answer comes back as tensors and is encoded here. What runs in the
engine's process is its admission check, the request checks, the batching and the model.
Every other request (metadata, statistics, repository control, shared memory, and infer
requests that name a shared memory region, whose registry is the engine's) goes whole to the
engine's `HttpApp`, so it gets the answer a server without workers gives.

Run by the engine's process (`http_workers.HttpWorkers`), never by hand:
`python -m bertserve.endpoints.http_worker --listen-fd N --channel-fd M`."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
import threading

import orjson
import uvloop

from bertserve.endpoints.http import (
    READS_BODY,
    HttpApp,
    Receive,
    Reply,
    Scope,
    infer_headers,
    infer_reply,
)
from bertserve.endpoints.http_bridge import Channel, Message, pack_request, unpack_response
from bertserve.endpoints.http_connection import WAITING_TASK
from bertserve.endpoints.http_service import UvicornServer, uvicorn_config
from bertserve.errors import BertserveError, ServerShuttingDown
from bertserve.messages import InferRequest
from bertserve.server_log import configure_logging
from bertserve.settings import ServerSettings

__all__ = ["WorkerApp", "main", "serve_worker"]

log = logging.getLogger("bertserve.http")


class EngineCalls:
    """The worker's end of its channel: each call waits for the engine's answer to it; a call
    whose client went away is withdrawn (the engine drops its queued work)."""

    def __init__(self) -> None:
        self.channel: Channel | None = None
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[Message] = loop.create_future()
        self.stopping = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._ids = itertools.count()

    def on_message(self, message: Message) -> None:
        kind = message[0]
        if kind in ("ok", "reply"):
            future = self._waiting.pop(message[1], None)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "start" and not self.started.done():
            self.started.set_result(message)
        elif kind == "stop":
            self.stopping.set()

    def on_lost(self, _: Exception | None) -> None:
        self.stopping.set()
        gone = ServerShuttingDown("the server's engine process has stopped")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(gone)
        self._waiting.clear()
        if not self.started.done():
            self.started.set_exception(gone)

    async def call(self, kind: str, *args: object) -> Message:
        """Send `(kind, id, *args)` and return the engine's answer to it."""
        channel = self.channel
        if channel is None or channel.closed:
            raise ServerShuttingDown("the server's engine process has stopped")
        call_id = next(self._ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        channel.send((kind, call_id, *args))
        try:
            return await future
        except asyncio.CancelledError:
            if self._waiting.pop(call_id, None) is not None:
                channel.send(("cancel", call_id))
            raise


class WorkerApp(HttpApp):
    """The HTTP app of a worker process: the routes, limits and access rules of `HttpApp`;
    infer requests decoded here and run by the engine's process, the rest run there whole."""

    def __init__(self, settings: ServerSettings, calls: EngineCalls) -> None:
        self._take_settings(settings)
        self.calls = calls

    async def _dispatch(
        self, handler: object, scope: Scope, receive: Receive, model: str, version: str
    ) -> Reply:
        if handler is HttpApp.infer:
            return await self._infer(scope, receive, model, version)
        body = await self._body(scope, receive) if handler in READS_BODY else b""
        return await self._forward(scope, body)

    def internal_error(self, error: BaseException) -> Reply:
        return Reply(500, orjson.dumps({"error": f"internal error: {error}"}))

    async def _infer(self, scope: Scope, receive: Receive, model: str, version: str) -> Reply:
        header_length, encoding, accept = infer_headers(scope)
        try:
            body = await self._body(scope, receive)
            request = await self.decode(body, header_length, encoding, model, version)
        except BertserveError:
            # Without workers the engine's admission check (an unknown model or version, a
            # full queue) comes before the body is read: its refusal wins here too.
            answer = await self._call(scope, "admit", model, version)
            if answer[0] == "reply":
                return _as_reply(answer)
            raise
        if _names_shared_memory(request):
            return await self._forward(scope, body)
        answer = await self._call(scope, "infer", *pack_request(request))
        if answer[0] == "ok":
            return infer_reply(unpack_response(answer[2:]), request, accept)
        return _as_reply(answer)

    async def _forward(self, scope: Scope, body: bytes) -> Reply:
        answer = await self._call(
            scope, "http", scope["method"], scope["path"], scope["query_string"],
            scope["headers"], body,
        )  # fmt: skip
        return _as_reply(answer)

    async def _call(self, scope: Scope, kind: str, *args: object) -> Message:
        scope[WAITING_TASK] = asyncio.current_task()  # cancelled if the client goes away
        try:
            return await self.calls.call(kind, *args)
        finally:
            del scope[WAITING_TASK]


def _as_reply(answer: Message) -> Reply:
    """A ("reply", id, status, headers, body) message as the reply it carries."""
    _, _, status, headers, body = answer
    return Reply(status, body, headers)


def _names_shared_memory(request: InferRequest) -> bool:
    if any(i.shm is not None for i in request.inputs):
        return True
    return request.outputs is not None and any(o.shm is not None for o in request.outputs)


async def serve_worker(listen: socket.socket, channel_socket: socket.socket) -> int:
    """Serve HTTP on `listen` for the engine at the other end of `channel_socket` until the
    engine says stop or goes away (what a worker process runs; the tests run it on a thread)."""
    loop = asyncio.get_running_loop()
    calls = EngineCalls()
    _, channel = await loop.connect_accepted_socket(
        lambda: Channel(calls.on_message, calls.on_lost), sock=channel_socket
    )
    calls.channel = channel
    try:
        _, index, settings, max_connections = await calls.started
    except ServerShuttingDown:
        return 1
    if threading.current_thread() is threading.main_thread():  # a process of its own
        configure_logging(settings)  # the server's --log-* flags, as the engine's process
        loop.add_signal_handler(signal.SIGTERM, calls.stopping.set)
    config = uvicorn_config(WorkerApp(settings, calls), settings, max_connections)
    server = UvicornServer(config)
    serving = asyncio.create_task(server.serve(sockets=[listen]))
    channel.send(("hello", os.getpid()))
    stopping = asyncio.create_task(calls.stopping.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await asyncio.gather(serving, return_exceptions=True)
    stopping.cancel()
    channel.close()
    log.debug("HTTP worker %d stopped", index)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group; the engine's process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Until the engine sends the server's settings (then server_log.configure_logging).
    logging.basicConfig(
        level=logging.WARNING,
        format="%(levelname).1s%(asctime)s %(process)d %(filename)s:%(lineno)d] %(message)s",
        datefmt="%m%d %H:%M:%S",
    )
    listen = socket.socket(fileno=args.listen_fd)
    channel = socket.socket(fileno=args.channel_fd)
    return uvloop.run(serve_worker(listen, channel))


if __name__ == "__main__":
    sys.exit(main())
