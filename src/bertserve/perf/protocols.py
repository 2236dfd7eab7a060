"""The load generator's wire protocols by name (`-i http`, `-i grpc`): each transport's module
is imported only when a sweep asks for it, so that HTTP runs never load grpcio."""

from __future__ import annotations

import importlib
from types import MappingProxyType

from bertserve.perf.transport import Transport, TransportError

__all__ = ["TRANSPORTS", "open_transport"]

#: Protocol name -> "module:class" of its Transport.
TRANSPORTS = MappingProxyType(
    {
        "http": "bertserve.perf.http_transport:HttpTransport",
        "grpc": "bertserve.perf.grpc_transport:GrpcTransport",
    }
)


def open_transport(protocol: str, url: str, model: str, version: str) -> Transport:
    """A transport for `protocol` to `model` (`version`: "" for the server's choice) at `url`."""
    if protocol not in TRANSPORTS:
        choices = " or ".join(f"-i {name}" for name in TRANSPORTS)
        raise TransportError(f"unknown protocol {protocol!r}: use {choices}")
    module, _, name = TRANSPORTS[protocol].partition(":")
    transport: type[Transport] = getattr(importlib.import_module(module), name)
    return transport(url, model, version)
