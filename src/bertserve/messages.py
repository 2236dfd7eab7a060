"""Protocol-neutral requests and responses: what the HTTP and gRPC front ends decode into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InferInput", "RequestedOutput", "InferRequest", "InferOutput", "InferResponse"]


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # already shaped; a view over the request body where possible


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # HTTP binary_data; None = client did not say
    parameters: dict[str, Any] = field(default_factory=dict)


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


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
