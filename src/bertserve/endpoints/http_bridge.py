"""The channel between an HTTP worker process and the engine's process: one stream socket (a
socket pair made by the engine's process), each message a pickled tuple after its 4-byte
length.

Both ends are bertserve's own processes, and a message is built only from what the codecs
decoded (strings, numbers, JSON values, numpy arrays) or the engine produced, so unpickling
it runs no code a client chose. A tuple's first item names its kind:

worker -> engine
    ("hello", pid)                              the worker serves
    ("infer", id, *pack_request(InferRequest))  a decoded infer request
    ("http", id, method, path, query, headers, body)
                                                any other request, whole, for the engine's
                                                HttpApp (control, statistics, shared memory)
    ("admit", id, model, version)               may the model take requests? (asked when a
                                                request cannot be decoded: the engine's
                                                refusal comes first, as without workers)
    ("cancel", id)                              the client of request `id` went away
engine -> worker
    ("start", index, ServerSettings)            the first message: what to serve
    ("ok", id, *pack_response(InferResponse))   the engine's answer to an infer request
    ("ok", id)                                  "admit": the model takes requests
    ("reply", id, status, headers, body)        a reply already made (an error, or an HttpApp's)
    ("stop",)                                   stop taking connections, finish, exit
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bertserve.messages import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

__all__ = [
    "Channel",
    "Message",
    "pack_request",
    "pack_response",
    "unpack_request",
    "unpack_response",
]

log = logging.getLogger("bertserve.http")

Message = tuple[Any, ...]

_LENGTH = struct.Struct("!I")


class Channel(asyncio.Protocol):
    """One end of a worker's socket pair, on the running loop: `send` a message, and each
    message that arrives goes to `on_message`; `on_lost` runs once the other end is gone."""

    def __init__(
        self,
        on_message: Callable[[Message], None],
        on_lost: Callable[[Exception | None], None],
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(exc)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        end = len(buffer)
        while end - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if end - start - 4 < size:
                break
            message = pickle.loads(buffer[start + 4 : start + 4 + size])
            start += 4 + size
            try:
                self._on_message(message)
            except Exception:  # noqa: BLE001 - one bad message must not end the channel
                log.exception("HTTP worker channel: cannot handle a %r message", message[0])
        if start:
            del buffer[:start]

    def send(self, message: Message) -> None:
        """Queue `message` for the other end (dropped once the channel is closed)."""
        if self._transport is None or self.closed:
            return
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._transport.writelines((_LENGTH.pack(len(payload)), payload))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


# -- requests and responses as plain tuples -----------------------------------------------------
# Pickling the dataclasses and arrays themselves runs Python code per object on both ends
# (dataclass state, numpy's reduce and rebuild); the engine's process pays the larger half.
# As tuples of strings, numbers and raw buffers (pickle copies a buffer as it copies bytes)
# a four-row BERT request and its answer cost the engine's process ~6 us instead of ~18 us
# (2-core development VM). A BYTES tensor (numpy objects) travels as its array.


def _tensor(array: np.ndarray) -> tuple[Any, ...]:
    if array.dtype.hasobject:
        return (array,)
    array = np.ascontiguousarray(array)
    return (array.dtype.str, array.shape, pickle.PickleBuffer(array.data))


def _array(packed: Sequence[Any]) -> np.ndarray:
    if len(packed) == 1:
        array: np.ndarray = packed[0]
        return array
    dtype, shape, data = packed
    return np.frombuffer(data, dtype).reshape(shape)


def pack_request(request: InferRequest) -> tuple[Any, ...]:
    """A decoded request with no shared memory tensor (those travel whole) as a tuple."""
    outputs = None
    if request.outputs is not None:
        outputs = [(o.name, o.binary, o.parameters, o.classification) for o in request.outputs]
    inputs = [(i.name, i.datatype, i.shape, _tensor(i.data)) for i in request.inputs]
    return (
        request.model_name, request.model_version, inputs, request.id, outputs,
        request.parameters, request.timeout_us, request.binary_outputs, request.priority,
        request.raw,
    )  # fmt: skip


def unpack_request(packed: Sequence[Any]) -> InferRequest:
    model, version, inputs, request_id, outputs, params, timeout, binary, priority, raw = packed
    return InferRequest(
        model, version,
        [InferInput(name, datatype, shape, _array(data)) for name, datatype, shape, data in inputs],
        request_id,
        None if outputs is None else [RequestedOutput(*o) for o in outputs],
        params, timeout, binary, priority, raw,
    )  # fmt: skip


def pack_response(response: InferResponse) -> tuple[Any, ...]:
    """An engine's answer (no output in shared memory: those requests travel whole)."""
    outputs = [(o.name, o.datatype, o.shape, _tensor(o.data)) for o in response.outputs]
    return (response.model_name, response.model_version, outputs, response.id,
            response.parameters)  # fmt: skip


def unpack_response(packed: Sequence[Any]) -> InferResponse:
    model, version, outputs, response_id, params = packed
    tensors = [InferOutput(name, kind, shape, _array(data)) for name, kind, shape, data in outputs]
    return InferResponse(model, version, tensors, response_id, params)
