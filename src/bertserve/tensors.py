"""KServe v2 datatypes <-> numpy, shapes and element counts, BYTES serialization."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from bertserve.errors import InvalidInput

__all__ = [
    "DATATYPES",
    "datatype_to_numpy",
    "numpy_to_datatype",
    "element_count",
    "checked_count",
    "MAX_RANK",
    "element_size",
    "serialize_bytes",
    "bytes_array",
    "deserialize_bytes",
    "config_type_to_datatype",
    "datatype_to_config_type",
]

# KServe v2 datatype -> numpy dtype (little-endian, as the binary extension requires).
_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
DATATYPES: frozenset[str] = frozenset(_TO_NUMPY)
_FROM_NUMPY: dict[np.dtype, str] = {v: k for k, v in _TO_NUMPY.items()}


def datatype_to_numpy(datatype: str) -> np.dtype:
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise InvalidInput(
            f"unknown datatype '{datatype}': expected one of {', '.join(sorted(DATATYPES))}"
        ) from None


def numpy_to_datatype(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _FROM_NUMPY[dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no KServe v2 datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype (BYTES has none: returns 0)."""
    if datatype == "BYTES":
        return 0
    return datatype_to_numpy(datatype).itemsize


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


#: Most dimensions a request's tensor may have (numpy's own limit is 64).
MAX_RANK = 32


def checked_count(name: str, shape: Sequence[int], available: int) -> int:
    """The element count of a shape a client claims for input `name`, checked before anything
    is allocated for it: no more than MAX_RANK dimensions, and no more elements than the
    `available` bytes received could hold (every element takes at least one byte), counting
    the dimensions of an empty tensor too, so that no claim can make the server allocate, or
    numpy refuse, more than the request carries."""
    if len(shape) > MAX_RANK:
        raise InvalidInput(
            f"input '{name}' has {len(shape)} dimensions; at most {MAX_RANK} are accepted"
        )
    nonzero = math.prod(d for d in shape if d)
    if nonzero > max(available, 1):
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} claims more elements than the "
            f"{available} bytes of the request could hold"
        )
    return math.prod(shape)


# model_config.proto's DataType enum names are TYPE_<x>, except STRING for BYTES.
def config_type_to_datatype(config_type: str) -> str:
    name = config_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def datatype_to_config_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


_LEN = struct.Struct("<I")


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor -> Triton's wire form: each element as a 4-byte little-endian length + bytes."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(
    buffer: bytes | memoryview,
    count: int,
    name: str = "",
    model: str = "",
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Triton's length-prefixed BYTES wire form -> a flat object array of bytes elements.

    Reads at most `count` + 1 elements, so memory follows the bytes received, not the shape
    claimed; the caller compares the number found with `count` (and answers with Triton's
    words). A length prefix cut short or an element running past the end is an error here."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    end = len(view)
    while offset < end and len(items) <= count:
        if offset + 4 > end:
            raise InvalidInput(
                f"incomplete string length indicator for inference input '{name}' for model "
                f"'{model}', expecting 4 bytes but only {end - offset} bytes available. Please "
                "make sure the string length indicator is in one buffer."
            )
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"input '{name}': BYTES element {len(items)} claims {length} bytes but only "
                f"{end - offset} remain in its data"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return bytes_array(items, count, shape)


def bytes_array(
    items: Sequence[bytes], count: int, shape: Sequence[int] | None = None
) -> np.ndarray:
    """An object array of BYTES elements: shaped when there are `count` of them (`shape`
    given), else flat so the engine can name the difference."""
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out.reshape(shape) if shape is not None and len(items) == count else out
