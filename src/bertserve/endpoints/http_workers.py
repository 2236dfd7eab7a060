"""`bertserve serve --http-workers N`: HTTP served by N worker processes, the engine in this one.

One process runs one Python thread at a time, and with small requests at high concurrency
the event loop's HTTP work (parsing, the codecs, the replies) competes for it with the
instance threads that batch and launch. Workers move that work out: each is a process
(`http_worker.py`) that accepts connections on this process's listening socket, decodes each
infer request and hands it here over a socket pair (`http_bridge.py`); this process checks
and runs it (`Engine.infer`) and sends the tensors back. Other requests run here whole on the
same `HttpApp` as without workers, so every endpoint answers as it does there.

A worker that exits unexpectedly is started again; `stop()` lets each finish its in-flight
requests (at most `--exit-timeout-secs`) before the engine drains."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bertserve.endpoints.http import HttpApp, Reply, error_reply
from bertserve.endpoints.http_bridge import Channel, Message, pack_response, unpack_request
from bertserve.endpoints.http_connection import CLIENT_GONE
from bertserve.errors import BertserveError
from bertserve.messages import InferRequest
from bertserve.settings import ServerSettings

__all__ = ["HttpWorkers", "Launcher", "WorkerHandle", "launch_process"]

log = logging.getLogger("bertserve.http")

#: Seconds a worker may take from its start to serving.
START_TIMEOUT = 60.0
#: A worker that ends sooner than this after its start is started again only after a pause.
_SHORT_LIFE = 5.0

_SRC = str(Path(__file__).resolve().parents[2])  # the folder that holds the bertserve package


class WorkerHandle(Protocol):
    """What the supervisor needs of a started worker: a `subprocess.Popen`, or in tests a
    worker on a thread of the test's process."""

    pid: int

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


#: Starts one worker on (the listening socket, its end of the channel) and owns that end.
Launcher = Callable[[socket.socket, socket.socket], WorkerHandle]


def launch_process(listen: socket.socket, channel: socket.socket) -> WorkerHandle:
    """A worker process: this interpreter running `bertserve.endpoints.http_worker` on the
    two descriptors it inherits."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SRC, env.get("PYTHONPATH", "")]))
    fds = (listen.fileno(), channel.fileno())
    process = subprocess.Popen(  # noqa: S603 - this interpreter, this package's module
        [sys.executable, "-m", "bertserve.endpoints.http_worker",
         "--listen-fd", str(fds[0]), "--channel-fd", str(fds[1])],
        pass_fds=fds, env=env,
    )  # fmt: skip
    channel.close()  # the child has its own copy
    return process


class _Worker:
    __slots__ = ("index", "process", "channel", "hello", "pid", "tasks", "started_at")

    def __init__(self, index: int, process: WorkerHandle) -> None:
        self.index = index
        self.process = process
        self.channel: Channel | None = None
        self.hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pid = process.pid
        #: call id -> (the task running it, the scope of a whole HTTP request or None)
        self.tasks: dict[int, tuple[asyncio.Task[None], dict[str, Any] | None]] = {}
        self.started_at = time.monotonic()


class HttpWorkers:
    """Worker processes serving HTTP on `listen` for `app` (this process's HttpApp)."""

    def __init__(
        self,
        app: HttpApp,
        settings: ServerSettings,
        listen: socket.socket,
        launch: Launcher = launch_process,
    ) -> None:
        self.app = app
        self._launch = launch
        self.engine = app.engine
        self.settings = settings
        self._listen = listen
        # --http-max-connections holds for all the workers together.
        self._max_connections = max(
            1, math.ceil(settings.http_max_connections / settings.http_workers)
        )
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self._restarts: set[asyncio.Task[None]] = set()

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids, by index."""
        return [self._workers[i].pid for i in sorted(self._workers)]

    async def start(self) -> None:
        """Start every worker and return once each serves; one that cannot start is a
        SystemExit (the others are stopped first)."""
        try:
            await asyncio.gather(*(self._spawn(i) for i in range(self.settings.http_workers)))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Ask each worker to stop taking connections, serve what they still hand over until
        they exit (killed past --exit-timeout-secs and a grace), then close the socket."""
        self._stopping = True
        for task in self._restarts:
            task.cancel()
        workers = list(self._workers.values())
        for worker in workers:
            if worker.channel is not None:
                worker.channel.send(("stop",))
        timeout = self.settings.exit_timeout_secs + 5.0
        await asyncio.gather(*(self._reap(w, timeout) for w in workers))
        self._workers.clear()
        self._listen.close()

    async def _spawn(self, index: int) -> None:
        parent, child = socket.socketpair()
        process = self._launch(self._listen, child)
        worker = _Worker(index, process)
        self._workers[index] = worker
        _, worker.channel = await asyncio.get_running_loop().connect_accepted_socket(
            lambda: Channel(
                functools.partial(self._on_message, worker),
                functools.partial(self._on_lost, worker),
            ),
            sock=parent,
        )
        worker.channel.send(("start", index, self.settings, self._max_connections))
        try:
            await asyncio.wait_for(asyncio.shield(worker.hello), START_TIMEOUT)
        except (TimeoutError, ConnectionError) as exc:
            process.kill()
            reason = "did not start in time" if isinstance(exc, TimeoutError) else "exited"
            raise SystemExit(f"HTTP worker {index} (pid {process.pid}) {reason}") from None
        log.info("HTTP worker %d serving (pid %d)", index, worker.pid)

    async def _reap(self, worker: _Worker, timeout: float) -> None:
        try:
            await asyncio.to_thread(worker.process.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "HTTP worker %d (pid %d) did not stop in time: killed", worker.index, worker.pid
            )
            worker.process.kill()
            await asyncio.to_thread(worker.process.wait)

    # -- the channel ---------------------------------------------------------------------------

    def _on_message(self, worker: _Worker, message: Message) -> None:
        kind = message[0]
        if kind == "infer":
            request = unpack_request(message[2:])
            self._run(worker, message[1], self._infer(worker, message[1], request), None)
        elif kind == "http":
            _, call_id, method, path, query, headers, body = message
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": query, "root_path": "", "headers": headers,
                "client": None, "server": None,
            }  # fmt: skip
            self._run(worker, call_id, self._http(worker, call_id, scope, body), scope)
        elif kind == "admit":
            _, call_id, model, version = message
            try:
                self.engine.check_admission(model, version)
                answer: Message = ("ok", call_id)
            except BertserveError as exc:
                answer = _reply(call_id, error_reply(exc))
            self._send(worker, call_id, answer)
        elif kind == "cancel":
            entry = worker.tasks.get(message[1])
            if entry is not None:
                task, whole = entry
                if whole is not None:
                    whole[CLIENT_GONE] = True
                task.cancel()
        elif kind == "hello" and not worker.hello.done():
            worker.pid = message[1]
            worker.hello.set_result(None)

    def _run(self, worker: _Worker, call_id: int, work: Any, scope: dict[str, Any] | None) -> None:
        task = asyncio.ensure_future(work)
        worker.tasks[call_id] = (task, scope)
        task.add_done_callback(lambda _: worker.tasks.pop(call_id, None))

    def _on_lost(self, worker: _Worker, _: Exception | None) -> None:
        for task, _scope in list(worker.tasks.values()):
            task.cancel()
        if not worker.hello.done():
            worker.hello.set_exception(ConnectionError("the worker exited"))
            return
        if self._stopping or self._workers.get(worker.index) is not worker:
            return
        task = asyncio.ensure_future(self._restart(worker))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, worker: _Worker) -> None:
        status = await asyncio.to_thread(worker.process.wait)
        log.error(
            "HTTP worker %d (pid %d) ended unexpectedly (exit status %d): starting another",
            worker.index, worker.pid, status,
        )  # fmt: skip
        if time.monotonic() - worker.started_at < _SHORT_LIFE:
            await asyncio.sleep(1.0)  # one that dies at once is not restarted in a tight loop
        if self._stopping:
            return
        try:
            await self._spawn(worker.index)
        except SystemExit as exc:
            log.error("%s", exc)

    async def _infer(self, worker: _Worker, call_id: int, request: InferRequest) -> None:
        answer: Message
        try:
            self.engine.check_admission(request.model_name, request.model_version)
            answer = ("ok", call_id, *pack_response(await self.engine.infer(request)))
        except asyncio.CancelledError:
            return  # its client went away: nobody waits for the answer
        except BertserveError as exc:
            answer = _reply(call_id, error_reply(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            log.exception("unhandled error on infer for %s", request.model_name)
            answer = _reply(call_id, self.app.internal_error(exc))
        self._send(worker, call_id, answer)

    async def _http(
        self, worker: _Worker, call_id: int, scope: dict[str, Any], body: bytes
    ) -> None:
        reply: dict[str, Any] = {}
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:  # the whole body was read: what a handler reading on would see
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                reply["status"] = message["status"]
                reply["headers"] = [h for h in message["headers"] if h[0] != b"content-length"]
            else:
                reply["body"] = message.get("body", b"")

        with contextlib.suppress(asyncio.CancelledError):  # cancelled: its client went away
            await self.app(scope, receive, send)
        if "status" in reply:
            answer = ("reply", call_id, reply["status"], reply["headers"], reply.get("body", b""))
            self._send(worker, call_id, answer)

    def _send(self, worker: _Worker, call_id: int, answer: Message) -> None:
        channel = worker.channel
        if channel is None:
            return
        try:
            channel.send(answer)
        except Exception as exc:  # noqa: BLE001 - an answer that cannot travel still gets one
            log.exception("cannot hand an answer to HTTP worker %d", worker.index)
            channel.send(_reply(call_id, self.app.internal_error(exc)))


def _reply(call_id: int, reply: Reply) -> Message:
    return ("reply", call_id, reply.status, reply.headers, reply.body)
