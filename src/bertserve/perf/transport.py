"""What the load generator needs from a wire protocol, whichever it is.

The interface lives here with the helpers every transport shares; the transports themselves
(`http_transport.py`, `grpc_transport.py`) are picked by name in `protocols.py`.

A `Transport` reads a model's metadata and the server's statistics, turns an input set into a
ready-to-send payload once (the hot path only writes bytes), and opens `Connection`s: one per
concurrent slot, each carrying one request at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from bertserve.errors import BertserveError

if TYPE_CHECKING:
    from bertserve.perf.shared_memory import Placed

__all__ = ["Connection", "Outcome", "Transport", "TransportError", "split_url"]

#: (succeeded, client send ns, client receive ns)
Outcome = tuple[bool, int, int]


class TransportError(BertserveError):
    """The server could not be reached or refused a request; the message says which and why."""


def split_url(url: str, default_port: int) -> tuple[str, int]:
    """host and port from "host:port" (a scheme prefix is allowed; IPv6 hosts in brackets)."""
    rest = url.split("://", 1)[-1].rstrip("/")
    if "/" in rest:
        raise TransportError(f"-u {url}: give host:port without a path")
    host, sep, port = rest.rpartition(":")
    if not sep or rest.endswith("]"):
        return rest.strip("[]"), default_port
    if not port.isdigit():
        raise TransportError(f"-u {url}: the port must be a number")
    return host.strip("[]"), int(port)


class Connection(abc.ABC):
    """One persistent connection (HTTP) or call slot (gRPC)."""

    @abc.abstractmethod
    async def infer(self, payload: Any) -> Outcome:
        """Send one prepared request and wait for its response; never raises for a failed
        request (that is an outcome), only ConnectionError when the connection died."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Transport(abc.ABC):
    """One server, one model, one protocol."""

    def __init__(self, url: str, model: str, version: str) -> None:
        self.url = url
        self.model = model
        self.version = version
        #: Headers every HTTP request carries (`-H`); other protocols ignore them.
        self.headers: tuple[tuple[str, str], ...] = ()

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect the control channel; raise TransportError when the server is unreachable."""

    @abc.abstractmethod
    async def model_metadata(self) -> dict[str, Any]:
        """The v2 model metadata document (name, versions, inputs, outputs)."""

    @abc.abstractmethod
    async def max_batch_size(self) -> int: ...

    @abc.abstractmethod
    async def statistics(self) -> dict[str, Any]:
        """The v2 statistics document of the model ({"model_stats": [...]})."""

    @abc.abstractmethod
    def prepare(
        self, inputs: dict[str, np.ndarray], placed: Mapping[str, Placed] | None = None
    ) -> Any:
        """Encode one input set into the payload `Connection.infer` sends; with `placed`, a
        request naming where its inputs and outputs lie in shared memory instead."""

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> None:
        raise TransportError(f"this transport cannot register shared memory ('{name}')")

    async def unregister_system_shared_memory(self, name: str) -> None:
        raise TransportError(f"this transport cannot unregister shared memory ('{name}')")

    @abc.abstractmethod
    async def check(
        self, inputs: dict[str, np.ndarray], placed: Mapping[str, Placed] | None = None
    ) -> None:
        """Send one request and decode the reply; raise TransportError with the server's message
        when it fails, so that a sweep never starts on requests the server refuses."""

    @abc.abstractmethod
    async def connect(self) -> Connection: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
