"""Triton's shared memory extensions: regions a client registers, then names in a request for
an input to be read from or an output to be written to.

System shared memory is a POSIX shared memory object (`/dev/shm/<key>`) mapped into this
process. CUDA shared memory is a `cudaIpcMemHandle_t` opened with the CUDA runtime (loaded
with ctypes, and only where a CUDA GPU is visible); its bounds are the client's `byte_size`.
Both are off unless the server runs with `--allow-client-shm=true`, as in tritonserver.

A request holds a lease on the regions it names from the moment it is read until its outputs
are written; unregistering a region that is in use takes effect when the last lease ends (as
tritonserver does), so status keeps listing it until then. Messages are tritonserver's."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bertserve.errors import InvalidInput, ModelNotFound, Unsupported

__all__ = ["DISABLED", "RESERVED_PREFIX", "SharedMemoryManager", "cuda_available"]

#: tritonserver's answer while client shared memory is off.
DISABLED = (
    "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
)
#: Keys tritonserver keeps for its own regions.
RESERVED_PREFIX = "triton_python_backend_shm_region_"
_SIZE_MAX = 2**64 - 1
_SHM_ROOT = Path("/dev/shm")
_PAGE = mmap.ALLOCATIONGRANULARITY


class _Region:
    kind = "system"

    def __init__(self, name: str, byte_size: int) -> None:
        self.name = name
        self.byte_size = byte_size
        self.leases = 0
        self.unregistering = False

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def write(self, offset: int, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SystemRegion(_Region):
    def __init__(self, name: str, key: str, offset: int, byte_size: int) -> None:
        super().__init__(name, byte_size)
        self.key, self.offset = key, offset
        stripped = key.lstrip("/")
        # shm_open's rule: one name, no further slashes (so nothing outside /dev/shm).
        if "/" in stripped or stripped in (".", ".."):
            raise InvalidInput(f"Unable to open shared memory region: '{key}'")
        try:
            fd = os.open(_SHM_ROOT / stripped, os.O_RDWR)
        except OSError:
            raise InvalidInput(f"Unable to open shared memory region: '{key}'") from None
        try:
            size = os.fstat(fd).st_size
            if byte_size == 0 or offset + byte_size > size:
                raise InvalidInput(
                    f"failed to register shared memory region '{name}': invalid args"
                )
            # mmap offsets are page-aligned; keep the distance to the client's offset.
            start = offset - offset % _PAGE
            self._delta = offset - start
            self._map = mmap.mmap(fd, self._delta + byte_size, offset=start)
        finally:
            os.close(fd)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }

    def read(self, offset: int, size: int) -> bytes:
        start = self._delta + offset
        return self._map[start : start + size]

    def write(self, offset: int, data: bytes | memoryview) -> None:
        start = self._delta + offset
        self._map[start : start + len(data)] = data

    def close(self) -> None:
        self._map.close()


class _CudaRuntime:
    """The few CUDA runtime calls CUDA IPC needs, through ctypes."""

    _HOST_TO_DEVICE, _DEVICE_TO_HOST, _LAZY_PEER_ACCESS = 1, 2, 1

    class Handle(ctypes.Structure):
        _fields_ = [("reserved", ctypes.c_char * 64)]

    def __init__(self) -> None:
        self.lib = _load_cudart()
        count = ctypes.c_int(0)
        if self.lib.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value == 0:
            raise OSError("no CUDA device")
        self.devices = count.value

    def check(self, code: int, what: str) -> None:
        if code != 0:
            self.lib.cudaGetErrorString.restype = ctypes.c_char_p
            reason = self.lib.cudaGetErrorString(code).decode()
            raise InvalidInput(f"{what}: {reason}")

    def open(self, raw_handle: bytes, device_id: int) -> int:
        self.check(self.lib.cudaSetDevice(device_id), "cudaSetDevice failed")
        handle = self.Handle.from_buffer_copy(raw_handle)
        pointer = ctypes.c_void_p()
        self.lib.cudaIpcOpenMemHandle.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            self.Handle,
            ctypes.c_uint,
        ]
        code = self.lib.cudaIpcOpenMemHandle(ctypes.byref(pointer), handle, self._LAZY_PEER_ACCESS)
        if code != 0:
            raise InvalidInput("failed to register shared memory region: invalid args")
        return pointer.value or 0

    def copy(self, destination: int, source: int, size: int, kind: int) -> None:
        self.lib.cudaMemcpy.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        self.check(self.lib.cudaMemcpy(destination, source, size, kind), "cudaMemcpy failed")

    def close(self, pointer: int) -> None:
        self.lib.cudaIpcCloseMemHandle.argtypes = [ctypes.c_void_p]
        self.lib.cudaIpcCloseMemHandle(pointer)


def _load_cudart() -> ctypes.CDLL:
    candidates = [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.12"]
    try:  # the runtime that CUDA builds of torch bring along, as a wheel
        import nvidia.cuda_runtime  # type: ignore[import-not-found]

        for folder in nvidia.cuda_runtime.__path__:
            candidates += sorted(str(p) for p in (Path(folder) / "lib").glob("libcudart.so*"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate:
            try:
                return ctypes.CDLL(candidate)
            except OSError:
                continue
    raise OSError("libcudart not found")


_cuda: _CudaRuntime | None = None
_cuda_checked = False


def _cuda_runtime() -> _CudaRuntime | None:
    global _cuda, _cuda_checked
    if not _cuda_checked:
        _cuda_checked = True
        try:
            _cuda = _CudaRuntime()
        except OSError:
            _cuda = None
    return _cuda


def cuda_available() -> bool:
    """Whether CUDA shared memory can be served here (a CUDA runtime and a GPU)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return _cuda_runtime() is not None


class _CudaRegion(_Region):
    kind = "cuda"

    def __init__(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        super().__init__(name, byte_size)
        runtime = _cuda_runtime()
        if runtime is None:
            raise InvalidInput(
                f"failed to register CUDA shared memory region: '{name}', GPUs not supported"
            )
        self.runtime, self.device_id = runtime, device_id
        self.pointer = runtime.open(raw_handle, device_id)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}

    def read(self, offset: int, size: int) -> bytes:
        buffer = ctypes.create_string_buffer(size)
        self.runtime.copy(ctypes.addressof(buffer), self.pointer + offset, size, 2)
        return buffer.raw

    def write(self, offset: int, data: bytes | memoryview) -> None:
        source = ctypes.create_string_buffer(bytes(data), len(data))
        self.runtime.copy(self.pointer + offset, ctypes.addressof(source), len(data), 1)

    def close(self) -> None:
        self.runtime.close(self.pointer)


class SharedMemoryManager:
    """The registered regions, by name; one namespace for system and CUDA regions."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def check_allowed(self) -> None:
        if not self.allow:
            raise Unsupported(DISABLED)

    def register_system(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self.check_allowed()
        if not name:
            raise InvalidInput("'region name' is necessary to register system shared memory region")
        stripped = key.lstrip("/")
        if not stripped:
            raise InvalidInput(
                f"cannot register shared memory region '{name}' - invalid shm key '{key}'"
            )
        if stripped.startswith(RESERVED_PREFIX):
            raise InvalidInput(
                f"cannot register shared memory region '{name}' with key '{key}' as the key "
                f"contains the reserved prefix '{RESERVED_PREFIX}'"
            )
        with self._lock:
            self._check_new(name)
            self._regions[name] = _SystemRegion(name, key, offset, byte_size)

    def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        self.check_allowed()
        if not name:
            raise InvalidInput("'region name' is necessary to register cuda shared memory region")
        if not cuda_available():
            raise InvalidInput(
                f"failed to register CUDA shared memory region: '{name}', GPUs not supported"
            )
        if len(raw_handle) != ctypes.sizeof(_CudaRuntime.Handle):
            raise InvalidInput("'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t")
        with self._lock:
            self._check_new(name)
            self._regions[name] = _CudaRegion(name, raw_handle, device_id, byte_size)

    def _check_new(self, name: str) -> None:
        if name in self._regions:
            raise InvalidInput(f"shared memory region '{name}' already in manager")

    def status(self, kind: str, name: str = "") -> list[dict[str, Any]]:
        """Regions of `kind` ("system" or "cuda"), or the one named."""
        with self._lock:
            if not name:
                return [r.status() for r in self._regions.values() if r.kind == kind]
            region = self._regions.get(name)
        if region is None:
            raise ModelNotFound(f"Unable to find {kind} shared memory region: '{name}'")
        if region.kind != kind:
            other = {"system": "system shared memory", "cuda": "CUDA shared memory"}
            raise ModelNotFound(
                f"The region named '{name}' is registered as {other[region.kind]}, not "
                f"{other[kind]}"
            )
        return [region.status()]

    def unregister(self, kind: str, name: str = "") -> None:
        """One region, or every region of `kind`; a region in use goes when its last request
        ends. An unknown name is not an error (as in tritonserver)."""
        self.check_allowed()
        with self._lock:
            names = [name] if name else [n for n, r in self._regions.items() if r.kind == kind]
            for each in names:
                region = self._regions.get(each)
                if region is None or region.kind != kind:
                    continue
                if region.leases:
                    region.unregistering = True
                else:
                    del self._regions[each]
                    region.close()

    def close(self) -> None:
        with self._lock:
            regions, self._regions = list(self._regions.values()), {}
        for region in regions:
            region.close()

    def _region(self, name: str, offset: int, byte_size: int) -> _Region:
        region = self._regions.get(name)
        if region is None or region.unregistering:
            raise ModelNotFound(f"Unable to find shared memory region: '{name}'")
        if offset >= region.byte_size:
            raise InvalidInput(f"Invalid offset for shared memory region: '{name}'")
        if byte_size > _SIZE_MAX - offset:
            raise InvalidInput(
                f"Integer overflow detected: byte_size ({byte_size}) + offset ({offset}) exceeds "
                f"maximum value ({_SIZE_MAX}) for region '{name}'"
            )
        if offset + byte_size > region.byte_size:
            raise InvalidInput(f"Invalid offset + byte size for shared memory region: '{name}'")
        return region

    @contextmanager
    def lease(self, refs: Iterable[tuple[str, int, int]]) -> Iterator[None]:
        """Check the (region, offset, byte_size) a request names and hold those regions until
        the request is done."""
        held: list[_Region] = []
        try:
            with self._lock:
                for name, offset, byte_size in refs:
                    region = self._region(name, offset, byte_size)
                    region.leases += 1
                    held.append(region)
            yield
        finally:
            with self._lock:
                for region in held:
                    region.leases -= 1
                    if region.unregistering and not region.leases:
                        if self._regions.get(region.name) is region:
                            del self._regions[region.name]
                        region.close()

    def read(self, name: str, offset: int, byte_size: int) -> bytes:
        """A copy of the bytes at `offset` (inside a lease)."""
        return self._regions[name].read(offset, byte_size)

    def write(self, name: str, offset: int, data: bytes | memoryview) -> None:
        self._regions[name].write(offset, data)
