"""Protocol-neutral requests and responses: what the HTTP and gRPC front ends decode into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "SharedMemoryRef",
]


@dataclass(frozen=True, slots=True)
class SharedMemoryRef:
    """Where a tensor lies in a registered shared memory region (Triton's
    `shared_memory_region`, `shared_memory_offset`, `shared_memory_byte_size` parameters)."""

    region: str
    offset: int
    byte_size: int


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    #: Shaped, a view over the request body where possible. Flat when what arrived does not
    #: fill the shape (BYTES: the elements found; other types: the raw bytes as uint8), so the
    #: engine can answer with Triton's words; empty when the tensor is in shared memory.
    data: np.ndarray
    shm: SharedMemoryRef | None = None


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # HTTP binary_data; None = client did not say
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Triton's classification extension: return the top `classification` classes as BYTES.
    classification: int = 0
    shm: SharedMemoryRef | None = None


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str  # "" = the policy's latest ready version
    inputs: list[InferInput]
    id: str = ""
    outputs: list[RequestedOutput] | None = None  # None = every output
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout_us: int = 0  # 0 = no per-request timeout
    binary_outputs: bool = False  # HTTP: request-level binary_data_output
    priority: int = 0
    #: HTTP `Inference-Header-Content-Length: 0`: the body is the raw tensor of the model's
    #: only input (one InferInput with no name yet, its bytes as uint8).
    raw: bool = False


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    #: Written to this shared memory region instead of the response body.
    shm: SharedMemoryRef | None = None


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
