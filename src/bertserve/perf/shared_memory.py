"""Request tensors in system shared memory: `bertserve perf --shared-memory system`.

As perf_analyzer does it: every input set's tensors are written once, back to back, into one
region the server maps; each output gets a region of `--output-shared-memory-size` bytes that
every request writes into (the load generator never reads outputs, so concurrent requests
overwriting each other's results costs nothing and changes no timing). A request then carries
only the tensors' names, shapes and places, so the measurement leaves out the copies through
the socket.

Regions are created with tritonclient's shared-memory utilities (POSIX shm, the same calls a
Triton client makes) and registered through the transport; `close` unregisters and unlinks
them whatever happened to the sweep.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertserve.tensors import numpy_to_datatype, serialize_bytes

__all__ = ["Placed", "SystemSharedMemory", "tensor_bytes"]

#: perf_analyzer's default for --output-shared-memory-size.
DEFAULT_OUTPUT_BYTES = 100 * 1024


@dataclass(frozen=True)
class Placed:
    """Where one tensor lies: the parameters a request names it by."""

    region: str
    offset: int
    byte_size: int

    def parameters(self) -> dict[str, Any]:
        return {
            "shared_memory_region": self.region,
            "shared_memory_offset": self.offset,
            "shared_memory_byte_size": self.byte_size,
        }


def tensor_bytes(array: np.ndarray) -> bytes:
    """A tensor as the server reads it from a region (BYTES length-prefixed, as on the wire)."""
    if numpy_to_datatype(array.dtype) == "BYTES":
        return serialize_bytes(array)
    return np.ascontiguousarray(array).tobytes()


@dataclass(frozen=True)
class Region:
    name: str
    key: str
    byte_size: int


class SystemSharedMemory:
    """The regions of one sweep. `place` writes the input sets and sizes the outputs; the
    caller registers `regions` with the server and unregisters them before `close`."""

    def __init__(self, output_byte_size: int = DEFAULT_OUTPUT_BYTES) -> None:
        if output_byte_size < 1:
            raise ValueError("--output-shared-memory-size must be at least 1 byte")
        self.output_byte_size = output_byte_size
        self._tag = f"bertserve_perf_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._handles: list[Any] = []
        self.regions: list[Region] = []

    def _create(self, suffix: str, byte_size: int) -> tuple[Region, Any]:
        from tritonclient.utils import shared_memory as shm

        region = Region(f"{self._tag}_{suffix}", f"/{self._tag}_{suffix}", byte_size)
        handle = shm.create_shared_memory_region(region.name, region.key, byte_size)
        self._handles.append(handle)
        self.regions.append(region)
        return region, handle

    def place(
        self, sets: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[str]
    ) -> list[dict[str, Placed]]:
        """Every input set written into one region, and one region per output: for each set,
        tensor name (inputs and outputs alike) -> where it lies."""
        from tritonclient.utils import shared_memory as shm

        blobs = [{name: tensor_bytes(array) for name, array in s.items()} for s in sets]
        total = sum(len(raw) for blob in blobs for raw in blob.values())
        placed: list[dict[str, Placed]] = [{} for _ in sets]
        if total:
            region, handle = self._create("input", total)
            offset = 0
            for where, blob in zip(placed, blobs, strict=True):
                for name, raw in blob.items():
                    if raw:
                        view = np.frombuffer(raw, dtype=np.uint8)
                        shm.set_shared_memory_region(handle, [view], offset=offset)
                    where[name] = Placed(region.name, offset, len(raw))
                    offset += len(raw)
        for name in outputs:
            region, _ = self._create(f"output{len(self.regions)}", self.output_byte_size)
            for where in placed:
                where[name] = Placed(region.name, 0, self.output_byte_size)
        return placed

    def close(self) -> None:
        from tritonclient.utils import shared_memory as shm

        while self._handles:
            shm.destroy_shared_memory_region(self._handles.pop())
        self.regions.clear()
