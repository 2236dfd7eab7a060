"""Wiring and lifecycle: bind, start the front ends, load models, drain, stop.

`Server` is the whole server inside a running event loop (what `bertserve serve` runs and what
the front-end tests start on port 0); `serve` adds the process around it: signal handling
and the start-up lines that launchers read."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
import sys
from dataclasses import replace
from types import TracebackType

import grpc

from bertserve.announce import READY_LINE, started_line
from bertserve.endpoints.grpc import start_grpc_server
from bertserve.endpoints.http import HttpApp
from bertserve.endpoints.http_service import UvicornServer, uvicorn_config
from bertserve.endpoints.http_workers import HttpWorkers
from bertserve.engine import Engine
from bertserve.metrics import MetricsServer, build_registry
from bertserve.settings import ServerSettings

__all__ = ["Server", "serve", "bind"]

log = logging.getLogger("bertserve.server")


def bind(
    host: str,
    port: int,
    service: str = "HTTP",
    flag: str = "--http-port",
    reuse_port: bool = False,
) -> socket.socket:
    """A listening TCP socket (port 0 = a free one), bound before anything loads, so the port
    is known and logged at once. `reuse_port`: SO_REUSEPORT (`--reuse-http-port`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(_bind_error(service, f"{host}:{port}", exc.strerror, flag)) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _bind_error(service: str, address: str, reason: str | None, flag: str) -> str:
    return f"cannot bind {service} to {address}: {reason}; choose another {flag} (0 = a free port)"


class Server:
    """bertserve's services in the running event loop.

    `start()` binds every enabled service (port 0 = a free one; `ports` then maps "http",
    "grpc" and "metrics" to the ports taken) and serves at once; `load()` loads the models;
    `stop()` drains: the front ends stop taking requests and finish those in flight (at most
    `exit_timeout_secs`), then every model instance is closed. As an async context manager
    it starts, loads, and stops on the way out::

        async with Server(ServerSettings(model_repositories=[repo], http_port=0)) as server:
            url = f"127.0.0.1:{server.ports['http']}"
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.engine = Engine(settings)
        self.ports: dict[str, int] = {}
        self._http: UvicornServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.http_workers: HttpWorkers | None = None  # --http-workers
        self._grpc: grpc.aio.Server | None = None
        self._metrics: MetricsServer | None = None  # on a thread of its own

    async def start(self) -> None:
        """Bind and serve every enabled service; a port that cannot be bound is a SystemExit
        naming it (whatever had started is stopped first)."""
        try:
            if self.settings.allow_http:
                await self._start_http()
            if self.settings.allow_grpc:
                self._grpc, self.ports["grpc"] = await start_grpc_server(self.engine, self.settings)
            if self.settings.allow_metrics:
                self._start_metrics()
        except BaseException:
            await self.stop()
            raise

    async def load(self) -> None:
        """Load the models the settings name (all of them unless in explicit mode). A model that
        fails is listed UNAVAILABLE; an unreadable repository raises."""
        await self.engine.start()

    async def stop(self) -> None:
        """Drain and stop; safe to call more than once and after a failed start."""
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(self.settings.exit_timeout_secs)
            self._grpc = None
        if self._http_task is not None:
            await asyncio.gather(self._http_task, return_exceptions=True)
            self._http, self._http_task = None, None
        if self.http_workers is not None:
            workers, self.http_workers = self.http_workers, None
            await workers.stop()
        await self.engine.stop()
        if self._metrics is not None:
            metrics, self._metrics = self._metrics, None
            await asyncio.to_thread(metrics.shutdown)
            metrics.server_close()

    async def __aenter__(self) -> Server:
        await self.start()
        try:
            await self.load()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def address(self, service: str) -> str:
        """The interface a service binds (`--<service>-address`, else `--host`)."""
        return str(getattr(self.settings, f"{service}_address")) or self.settings.host

    async def _start_http(self) -> None:
        host = self.address("http")
        settings = self.settings
        app = HttpApp(self.engine, settings)
        # Loaded here with workers too: a TLS setting that cannot be used ends the start at once.
        config = uvicorn_config(app, settings, settings.http_max_connections)
        sock = bind(host, settings.http_port, reuse_port=settings.reuse_http_port)
        self.ports["http"] = sock.getsockname()[1]
        if settings.http_workers:
            self.http_workers = HttpWorkers(app, settings, sock)
            await self.http_workers.start()
            log.info(
                "HTTP service listening on %s:%d (%d worker processes, pids %s)", host,
                self.ports["http"], settings.http_workers,
                ", ".join(map(str, self.http_workers.pids)),
            )  # fmt: skip
            return
        self._http = UvicornServer(config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        log.info("HTTP service listening on %s:%d", host, self.ports["http"])

    def _start_metrics(self) -> None:
        engine = self.engine
        registry = build_registry(
            engine.all_stats,
            lambda: [
                (e.name, str(v), s.scheduler.queue_length())
                for e in list(engine.models.values())
                for v, s in list(e.versions.items())
            ],
            self.settings,
        )
        host, port = self.address("metrics"), self.settings.metrics_port
        try:
            self._metrics = MetricsServer(host, port, registry)
        except OSError as exc:
            error = _bind_error("metrics", f"{host}:{port}", exc.strerror, "--metrics-port")
            raise SystemExit(error) from None
        self.ports["metrics"] = self._metrics.server_port


#: Descriptors kept for model files, logs and the rest when connections are capped.
RESERVED_DESCRIPTORS = 256


def open_file_limit(settings: ServerSettings) -> ServerSettings:
    """Raise this process's soft limit on open files to the hard limit (each connection is a
    descriptor) and, where even that cannot hold both connection caps, lower the caps so that
    a flood of connections meets a clear refusal instead of failing accept() and model
    loads. Returns the settings to serve with."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("open-file limit raised from %d to %d (the hard limit)", soft, hard)
    room = hard - RESERVED_DESCRIPTORS
    wanted = settings.http_max_connections + settings.grpc_max_connections
    if wanted <= room:
        return settings
    http = max(1, settings.http_max_connections * room // wanted)
    grpc_ = max(1, room - http)
    log.warning(
        "the open-file limit (%d) cannot hold --http-max-connections %d and "
        "--grpc-max-connections %d: serving with %d and %d (raise the hard limit, ulimit -Hn)",
        hard,
        settings.http_max_connections,
        settings.grpc_max_connections,
        http,
        grpc_,
    )
    return replace(settings, http_max_connections=http, grpc_max_connections=grpc_)


async def serve(settings: ServerSettings) -> int:
    """`bertserve serve`: start, print the start-up lines, load, serve until SIGTERM/SIGINT,
    drain. Exits 1 when the models could not be loaded at all (an unreadable repository)."""
    settings = open_file_limit(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = Server(settings)
    # SIGUSR1: leave the load balancers' rotation but keep serving (a preStop hook's signal).
    loop.add_signal_handler(signal.SIGUSR1, server.engine.stop_admission)
    await server.start()
    for service, port in server.ports.items():
        print(started_line(service, server.address(service), port), flush=True)

    loading = asyncio.create_task(server.load())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    failure = loading.exception() if loading in done else None
    if failure is not None:
        # Nothing can be served (an unreadable repository; a model that failed to load, with
        # --exit-on-error): say why, exit non-zero.
        print(f"bertserve serve: cannot serve: {failure}", file=sys.stderr, flush=True)
    elif loading in done:
        print(READY_LINE, flush=True)
        await stopping

    print("bertserve stopping: finishing in-flight requests", flush=True)
    for task in (loading, stopping):
        task.cancel()
    await asyncio.gather(loading, stopping, return_exceptions=True)
    await server.stop()
    print("bertserve stopped", flush=True)
    return 1 if failure is not None else 0
