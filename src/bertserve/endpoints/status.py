"""One table: domain error -> HTTP status and gRPC status code (by name, so this module does
not import grpc)."""

from __future__ import annotations

from bertserve.errors import (
    BertserveError,
    InternalError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    QueueFull,
    RequestTimeout,
    RequestTooLarge,
    ServerShuttingDown,
    Unsupported,
)

__all__ = ["http_status", "grpc_code_name", "retry_later"]

# Most specific first: ConfigError is a ModelLoadError, RequestTooLarge an InvalidInput.
_TABLE: tuple[tuple[type[BertserveError], int, str], ...] = (
    (RequestTooLarge, 413, "RESOURCE_EXHAUSTED"),
    (InvalidInput, 400, "INVALID_ARGUMENT"),
    (ModelNotFound, 404, "NOT_FOUND"),
    (ModelNotReady, 503, "UNAVAILABLE"),
    (QueueFull, 503, "UNAVAILABLE"),
    (RequestTimeout, 503, "DEADLINE_EXCEEDED"),
    (ServerShuttingDown, 503, "UNAVAILABLE"),
    (Unsupported, 501, "UNIMPLEMENTED"),
    (ModelLoadError, 400, "INVALID_ARGUMENT"),
    (InternalError, 500, "INTERNAL"),
)


def _row(error: BaseException) -> tuple[int, str]:
    for kind, http, grpc in _TABLE:
        if isinstance(error, kind):
            return http, grpc
    return 500, "INTERNAL"


def http_status(error: BaseException) -> int:
    return _row(error)[0]


def grpc_code_name(error: BaseException) -> str:
    return _row(error)[1]


def retry_later(error: BaseException) -> bool:
    """Overload or a drain (HTTP 503): passing, so the reply says when to come back."""
    return http_status(error) == 503
