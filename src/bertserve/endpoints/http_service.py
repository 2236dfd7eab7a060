"""uvicorn set up as bertserve serves HTTP: the guarded protocol under the settings' limits,
TLS from the settings' files, no signal handling of its own. The engine's process and each
HTTP worker process (`http_worker.py`) start the same service."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn

from bertserve.endpoints.grpc import read_pem
from bertserve.endpoints.http_connection import ConnectionLimits, guarded_protocol
from bertserve.settings import ServerSettings, TlsFiles

__all__ = ["UvicornServer", "uvicorn_config"]


class UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: the owner of the server decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _tls_options(tls: TlsFiles | None) -> dict[str, Any]:
    """uvicorn's settings for HTTPS (none without TLS); a file that cannot be read ends the
    start, naming its flag."""
    if tls is None:
        return {}
    for path, flag in ((tls.cert, "--http-server-cert"), (tls.key, "--http-server-key"),
                       (tls.root, "--http-root-cert")):  # fmt: skip
        read_pem(path, flag)
    return {
        "ssl_certfile": str(tls.cert),
        "ssl_keyfile": str(tls.key),
        "ssl_ca_certs": str(tls.root) if tls.root is not None else None,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if tls.mutual else ssl.CERT_NONE,
    }


def uvicorn_config(app: Any, settings: ServerSettings, max_connections: int) -> uvicorn.Config:
    """The loaded config of one HTTP service over `app` (an ASGI app) with at most
    `max_connections` open; a TLS setting that cannot be used is a SystemExit."""
    limits = ConnectionLimits(
        max_connections=max_connections,
        header_timeout=settings.http_header_timeout_secs,
        body_timeout=settings.http_body_timeout_secs,
        keep_alive=settings.http_keep_alive_secs,
        max_header_bytes=settings.http_max_header_size,
    )
    config = uvicorn.Config(
        app,
        loop="none",
        http=guarded_protocol(limits),
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=settings.http_keep_alive_secs,
        timeout_graceful_shutdown=int(settings.exit_timeout_secs),
        backlog=2048,
        **_tls_options(settings.http_tls),
    )
    try:
        config.load()  # builds the TLS context, if any, before the port takes requests
    except (ssl.SSLError, ValueError) as exc:
        raise SystemExit(f"cannot serve HTTPS with --http-server-cert/-key: {exc}") from None
    return config
