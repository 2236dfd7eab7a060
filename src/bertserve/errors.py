"""Domain errors. They know no transport: endpoints/status.py maps them to HTTP and gRPC codes.

Every message says what went wrong and, where it helps, what to do next.
"""

from __future__ import annotations

__all__ = [
    "BertserveError",
    "InvalidInput",
    "RequestTooLarge",
    "ModelNotFound",
    "ModelNotReady",
    "ModelLoadError",
    "QueueFull",
    "RequestTimeout",
    "Unsupported",
    "ServerShuttingDown",
    "InternalError",
    "ConfigError",
]


class BertserveError(Exception):
    """Base class: `str(error)` is the message sent to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(BertserveError):
    """The request is malformed or does not match the model (HTTP 400, INVALID_ARGUMENT)."""


class RequestTooLarge(InvalidInput):
    """A request above a size limit, before or after decompression (HTTP 413,
    RESOURCE_EXHAUSTED)."""


class ModelNotFound(BertserveError):
    """Unknown model or version (HTTP 404, NOT_FOUND)."""


class ModelNotReady(BertserveError):
    """The version asked for exists but is not ready (HTTP 503, UNAVAILABLE, as Triton)."""


class ModelLoadError(BertserveError):
    """A model could not be loaded; the message names the field or file at fault."""


class ConfigError(ModelLoadError):
    """config.pbtxt is invalid or contradicts the model file."""


class QueueFull(BertserveError):
    """Admission refused: the model's queue is at max_queue_size (HTTP 503, UNAVAILABLE)."""


class RequestTimeout(BertserveError):
    """The request waited longer than its timeout (HTTP 504, DEADLINE_EXCEEDED)."""


class Unsupported(BertserveError):
    """A feature or setting the server does not offer (HTTP 501, UNIMPLEMENTED, as Triton)."""


class ServerShuttingDown(BertserveError):
    """The server is draining and takes no new requests (HTTP 503, UNAVAILABLE)."""


class InternalError(BertserveError):
    """A backend failed while running a batch (HTTP 500, INTERNAL)."""
