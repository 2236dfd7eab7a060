"""ONNX Runtime's C API through ctypes, for models with STRING tensors.

onnxruntime's Python binding cannot carry arbitrary bytes: it hands a `bytes` element to the
graph as its repr (`b'abc'` becomes "b'abc'"), cuts `numpy.bytes_` elements at the first NUL
byte, and fails on any output string that is not valid UTF-8. Triton's ONNX Runtime backend
passes raw bytes through the C API, so a client's strings round-trip exactly. The wheel ships
that C API as `libonnxruntime.so` next to the binding; this module calls it for the sessions of
models that have STRING inputs or outputs (the numeric hot path keeps the Python binding).

Only the functions used are declared: each by its index in the `OrtApi` table (the table only
grows at its end, so an index never changes) and its C signature."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bertserve.errors import ConfigError, InternalError

__all__ = ["StringSession"]

#: GetResizedStringTensorElementBuffer (raw bytes of a given length, NULs included) is API 15.
_API_VERSION = 15

_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)
_SIZE = ctypes.c_size_t
_NAMES = ctypes.POINTER(ctypes.c_char_p)
_I64P = ctypes.POINTER(ctypes.c_int64)

# name: (index in OrtApi, restype, argtypes). Status-returning functions return OrtStatus*.
_FUNCTIONS: dict[str, tuple[int, Any, tuple[Any, ...]]] = {
    "GetErrorMessage": (2, ctypes.c_char_p, (_P,)),
    "CreateEnv": (3, _P, (ctypes.c_int, ctypes.c_char_p, _PP)),
    "CreateSession": (7, _P, (_P, ctypes.c_char_p, _P, _PP)),
    "Run": (9, _P, (_P, _P, _NAMES, _PP, _SIZE, _NAMES, _SIZE, _PP)),
    "CreateSessionOptions": (10, _P, (_PP,)),
    "SetSessionExecutionMode": (13, _P, (_P, ctypes.c_int)),
    "SetSessionLogSeverityLevel": (22, _P, (_P, ctypes.c_int)),
    "SetSessionGraphOptimizationLevel": (23, _P, (_P, ctypes.c_int)),
    "SetIntraOpNumThreads": (24, _P, (_P, ctypes.c_int)),
    "SetInterOpNumThreads": (25, _P, (_P, ctypes.c_int)),
    "CreateTensorAsOrtValue": (48, _P, (_P, _I64P, _SIZE, ctypes.c_int, _PP)),
    "CreateTensorWithDataAsOrtValue": (
        49,
        _P,
        (_P, _P, _SIZE, _I64P, _SIZE, ctypes.c_int, _PP),
    ),
    "GetTensorMutableData": (51, _P, (_P, _PP)),
    "GetStringTensorDataLength": (53, _P, (_P, ctypes.POINTER(_SIZE))),
    "GetStringTensorContent": (54, _P, (_P, _P, _SIZE, ctypes.POINTER(_SIZE), _SIZE)),
    "GetTensorElementType": (60, _P, (_P, ctypes.POINTER(ctypes.c_int))),
    "GetDimensionsCount": (61, _P, (_P, ctypes.POINTER(_SIZE))),
    "GetDimensions": (62, _P, (_P, _I64P, _SIZE)),
    "GetTensorTypeAndShape": (65, _P, (_P, _PP)),
    "CreateCpuMemoryInfo": (69, _P, (ctypes.c_int, ctypes.c_int, _PP)),
    "GetAllocatorWithDefaultOptions": (78, _P, (_PP,)),
    "ReleaseStatus": (93, None, (_P,)),
    "ReleaseSession": (95, None, (_P,)),
    "ReleaseValue": (96, None, (_P,)),
    "ReleaseTensorTypeAndShapeInfo": (99, None, (_P,)),
    "ReleaseSessionOptions": (100, None, (_P,)),
    "AddSessionConfigEntry": (130, _P, (_P, ctypes.c_char_p, ctypes.c_char_p)),
    "SessionOptionsAppendExecutionProvider_CUDA_V2": (204, _P, (_P, _P)),
    "CreateCUDAProviderOptions": (205, _P, (_PP,)),
    "UpdateCUDAProviderOptions": (206, _P, (_P, _NAMES, _NAMES, _SIZE)),
    "ReleaseCUDAProviderOptions": (208, None, (_P,)),
    "GetResizedStringTensorElementBuffer": (252, _P, (_P, _SIZE, _SIZE, _PP)),
}

# ONNX element types (TensorProto.DataType) <-> numpy.
_STRING = 8
_ELEMENT_TO_NUMPY: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<u1"),
    3: np.dtype("<i1"),
    4: np.dtype("<u2"),
    5: np.dtype("<i2"),
    6: np.dtype("<i4"),
    7: np.dtype("<i8"),
    9: np.dtype(np.bool_),
    10: np.dtype("<f2"),
    11: np.dtype("<f8"),
    12: np.dtype("<u4"),
    13: np.dtype("<u8"),
}
_NUMPY_TO_ELEMENT = {dtype: element for element, dtype in _ELEMENT_TO_NUMPY.items()}

_ORT_ENABLE_ALL = 99
_ORT_SEQUENTIAL = 0
_LOG_ERROR = 3
_ARENA_ALLOCATOR, _MEM_TYPE_DEFAULT = 1, 0


class _Api:
    """The loaded library, its function table and one process-wide OrtEnv."""

    def __init__(self) -> None:
        import onnxruntime

        capi = Path(onnxruntime.__file__).parent / "capi"
        libraries = sorted(capi.glob("libonnxruntime.so*"))
        if not libraries:
            raise ConfigError(
                f"this onnxruntime ({onnxruntime.__version__}) ships no libonnxruntime.so, which "
                "models with STRING tensors need; install the onnxruntime wheel from PyPI"
            )
        lib = ctypes.CDLL(str(libraries[0]))

        class Base(ctypes.Structure):
            _fields_ = [("GetApi", ctypes.CFUNCTYPE(_P, ctypes.c_uint32))]

        lib.OrtGetApiBase.restype = ctypes.POINTER(Base)
        table_address = lib.OrtGetApiBase().contents.GetApi(_API_VERSION)
        if not table_address:
            raise ConfigError(
                f"onnxruntime {onnxruntime.__version__} lacks C API version {_API_VERSION} "
                "(ONNX Runtime 1.15), which models with STRING tensors need; upgrade onnxruntime"
            )
        size = max(index for index, _, _ in _FUNCTIONS.values()) + 1
        table = ctypes.cast(table_address, ctypes.POINTER(_P * size)).contents
        self._lib = lib  # keeps the library loaded
        self.f: dict[str, Callable[..., Any]] = {
            name: ctypes.CFUNCTYPE(restype, *argtypes)(table[index] or 0)
            for name, (index, restype, argtypes) in _FUNCTIONS.items()
        }
        self.env = self.out(self.f["CreateEnv"], _LOG_ERROR, b"bertserve")
        self.cpu_memory = self.out(
            self.f["CreateCpuMemoryInfo"], _ARENA_ALLOCATOR, _MEM_TYPE_DEFAULT
        )
        self.allocator = self.out(self.f["GetAllocatorWithDefaultOptions"])

    def check(self, status: int | None, error: type[Exception] = InternalError) -> None:
        if status:
            message = self.f["GetErrorMessage"](status).decode("utf-8", "replace")
            self.f["ReleaseStatus"](status)
            raise error(message)

    def out(self, function: Callable[..., Any], *args: Any) -> int:
        """Call a function whose last argument receives a pointer; return that pointer."""
        value = _P()
        self.check(function(*args, ctypes.byref(value)))
        return value.value or 0


_api: _Api | None = None
_api_lock = threading.Lock()


def _get_api() -> _Api:
    global _api
    with _api_lock:
        if _api is None:
            _api = _Api()
        return _api


class StringSession:
    """An ONNX Runtime session run through the C API, with raw bytes for STRING tensors."""

    def __init__(
        self,
        model_file: Path,
        intra_threads: int,
        inter_threads: int,
        spinning: str,
        gpu_id: int | None,
    ) -> None:
        api = self.api = _get_api()
        f = api.f
        options = api.out(f["CreateSessionOptions"])
        try:
            api.check(f["SetIntraOpNumThreads"](options, intra_threads), ConfigError)
            api.check(f["SetInterOpNumThreads"](options, inter_threads), ConfigError)
            api.check(f["SetSessionExecutionMode"](options, _ORT_SEQUENTIAL), ConfigError)
            api.check(f["SetSessionGraphOptimizationLevel"](options, _ORT_ENABLE_ALL), ConfigError)
            api.check(f["SetSessionLogSeverityLevel"](options, _LOG_ERROR), ConfigError)
            for key in (b"session.intra_op.allow_spinning", b"session.inter_op.allow_spinning"):
                api.check(f["AddSessionConfigEntry"](options, key, spinning.encode()), ConfigError)
            if gpu_id is not None:
                self._append_cuda(options, gpu_id)
            self.session = api.out(f["CreateSession"], api.env, str(model_file).encode(), options)
        except InternalError as exc:  # a status from session creation
            raise ConfigError(f"onnxruntime could not load {model_file.name}: {exc}") from None
        finally:
            f["ReleaseSessionOptions"](options)

    def _append_cuda(self, options: int, gpu_id: int) -> None:
        api, f = self.api, self.api.f
        cuda = api.out(f["CreateCUDAProviderOptions"])
        try:
            keys = (ctypes.c_char_p * 1)(b"device_id")
            values = (ctypes.c_char_p * 1)(str(gpu_id).encode())
            api.check(f["UpdateCUDAProviderOptions"](cuda, keys, values, 1), ConfigError)
            api.check(
                f["SessionOptionsAppendExecutionProvider_CUDA_V2"](options, cuda), ConfigError
            )
        finally:
            f["ReleaseCUDAProviderOptions"](cuda)

    def run(self, feed: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        api, f = self.api, self.api.f
        kept: list[np.ndarray] = []  # arrays whose memory the input values borrow
        values: list[int] = []
        results = (_P * len(outputs))()
        try:
            for array in feed.values():
                values.append(self._input_value(array, kept))
            input_names = (ctypes.c_char_p * len(feed))(*(n.encode() for n in feed))
            output_names = (ctypes.c_char_p * len(outputs))(*(n.encode() for n in outputs))
            api.check(
                f["Run"](
                    self.session,
                    None,
                    input_names,
                    (_P * len(values))(*values),
                    len(values),
                    output_names,
                    len(outputs),
                    results,
                )
            )
            return {name: self._output_array(results[i] or 0) for i, name in enumerate(outputs)}
        finally:
            for value in [*values, *results]:
                if value:
                    f["ReleaseValue"](value)

    def _input_value(self, array: np.ndarray, kept: list[np.ndarray]) -> int:
        api, f = self.api, self.api.f
        shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
        if array.dtype.kind in "OSU":
            value = api.out(f["CreateTensorAsOrtValue"], api.allocator, shape, array.ndim, _STRING)
            try:
                for i, item in enumerate(array.reshape(-1)):
                    data = item if isinstance(item, bytes) else str(item).encode("utf-8")
                    buffer = _P()
                    api.check(
                        f["GetResizedStringTensorElementBuffer"](
                            value, i, len(data), ctypes.byref(buffer)
                        )
                    )
                    if data:
                        ctypes.memmove(buffer, data, len(data))
            except BaseException:
                f["ReleaseValue"](value)
                raise
            return value
        contiguous = np.ascontiguousarray(array)
        kept.append(contiguous)
        element = _NUMPY_TO_ELEMENT.get(contiguous.dtype.newbyteorder("<"))
        if element is None:
            raise InternalError(f"numpy dtype {contiguous.dtype} has no ONNX element type")
        return api.out(
            f["CreateTensorWithDataAsOrtValue"],
            api.cpu_memory,
            contiguous.ctypes.data_as(_P),
            contiguous.nbytes,
            shape,
            contiguous.ndim,
            element,
        )

    def _output_array(self, value: int) -> np.ndarray:
        api, f = self.api, self.api.f
        info = api.out(f["GetTensorTypeAndShape"], value)
        try:
            element = ctypes.c_int()
            api.check(f["GetTensorElementType"](info, ctypes.byref(element)))
            rank = _SIZE()
            api.check(f["GetDimensionsCount"](info, ctypes.byref(rank)))
            dims = (ctypes.c_int64 * max(rank.value, 1))()
            api.check(f["GetDimensions"](info, dims, rank.value))
            shape = tuple(dims[i] for i in range(rank.value))
        finally:
            f["ReleaseTensorTypeAndShapeInfo"](info)
        count = int(np.prod(shape)) if shape else 1
        if element.value == _STRING:
            return _string_contents(api, value, count).reshape(shape)
        dtype = _ELEMENT_TO_NUMPY.get(element.value)
        if dtype is None:
            raise InternalError(f"output of ONNX element type {element.value} is not served")
        array = np.empty(shape, dtype=dtype)
        if array.nbytes:
            data = api.out(f["GetTensorMutableData"], value)
            ctypes.memmove(array.ctypes.data, data, array.nbytes)
        return array

    def close(self) -> None:
        if self.session:
            self.api.f["ReleaseSession"](self.session)
            self.session = 0


def _string_contents(api: _Api, value: int, count: int) -> np.ndarray:
    out = np.empty(count, dtype=np.object_)
    if count == 0:
        return out
    total = _SIZE()
    api.check(api.f["GetStringTensorDataLength"](value, ctypes.byref(total)))
    buffer = ctypes.create_string_buffer(max(total.value, 1))
    offsets = (_SIZE * count)()
    api.check(api.f["GetStringTensorContent"](value, buffer, total.value, offsets, count))
    raw = buffer.raw[: total.value]
    ends = [*offsets[1:], total.value]
    for i in range(count):
        out[i] = raw[offsets[i] : ends[i]]
    return out
