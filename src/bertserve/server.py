"""Wiring and lifecycle: bind, start the front ends, load models, drain on a signal, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from bertserve.announce import READY_LINE, started_line
from bertserve.endpoints.grpc import start_grpc_server
from bertserve.endpoints.http import HttpApp
from bertserve.engine import Engine
from bertserve.metrics import GpuMetrics, TritonMetrics
from bertserve.settings import ServerSettings

__all__ = ["serve", "bind"]

log = logging.getLogger("bertserve.server")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 = a free one), bound before anything loads, so the port
    is known and logged at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot bind {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: this module owns the shutdown sequence."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(settings: ServerSettings) -> int:
    engine = Engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    tasks: list[asyncio.Task[Any]] = []
    http_server = None
    if settings.allow_http:
        http_sock = bind(settings.host, settings.http_port)
        config = uvicorn.Config(
            HttpApp(engine, settings),
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=60,
            timeout_graceful_shutdown=int(settings.exit_timeout_secs),
            backlog=2048,
        )
        http_server = _UvicornServer(config)
        tasks.append(asyncio.create_task(http_server.serve(sockets=[http_sock])))
        log.info("HTTP service listening on %s:%d", settings.host, http_sock.getsockname()[1])
        print(started_line("http", settings.host, http_sock.getsockname()[1]), flush=True)

    grpc_server = None
    if settings.allow_grpc:
        grpc_server, grpc_port = await start_grpc_server(engine, settings)
        print(started_line("grpc", settings.host, grpc_port), flush=True)

    metrics_httpd = None
    if settings.allow_metrics:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(
            TritonMetrics(
                engine.all_stats,
                lambda: [
                    (e.name, str(v), s.scheduler.queue_length())
                    for e in list(engine.models.values())
                    for v, s in list(e.versions.items())
                ],
            )
        )
        gpu_metrics = GpuMetrics(dict(os.environ))
        if gpu_metrics.available:
            registry.register(gpu_metrics)
        metrics_httpd, _thread = start_http_server(
            settings.metrics_port, addr=settings.host, registry=registry
        )
        port = metrics_httpd.server_port
        print(started_line("metrics", settings.host, port), flush=True)

    start = asyncio.create_task(engine.start())
    done, _ = await asyncio.wait(
        {start, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if start in done and start.exception() is not None:
        log.error("startup failed: %s", start.exception())
        stop.set()
    elif start in done:
        print(READY_LINE, flush=True)
        await stop.wait()

    print("bertserve stopping: finishing in-flight requests", flush=True)
    if http_server is not None:
        http_server.should_exit = True
    if grpc_server is not None:
        await grpc_server.stop(settings.exit_timeout_secs)
    await asyncio.gather(*tasks, return_exceptions=True)
    if not start.done():
        start.cancel()
    await engine.stop()
    if metrics_httpd is not None:
        metrics_httpd.shutdown()
    print("bertserve stopped", flush=True)
    return 0
