"""The shared-memory manager on its own: region bookkeeping (leases, unregistering a region in
use, the one namespace for both kinds) and, through a stand-in for libcudart that keeps the
"device" memory in host buffers, the CUDA code path on a machine without a GPU. The real
CUDA path is exercised by tests/gpu/test_cuda_shared_memory.py where a GPU exists."""

from __future__ import annotations

import ctypes
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bertserve import shared_memory
from bertserve.errors import InvalidInput, ModelNotFound, Unsupported
from bertserve.shared_memory import DISABLED, SharedMemoryManager

_HANDLE_SIZE = 64


class _Call:
    """A library function as ctypes gives it: callable, with settable argtypes/restype."""

    def __init__(self, function: Any) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


class _FakeCudart:
    """libcudart's calls as ctypes makes them: pointers arrive as byref() objects."""

    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.buffers: dict[bytes, ctypes.Array[ctypes.c_char]] = {}
        self.closed: list[int] = []
        self.fail_open = False
        for name in dir(self):
            if name.startswith("cuda"):
                setattr(self, name, _Call(getattr(self, name)))

    def cudaGetDeviceCount(self, count: Any) -> int:  # noqa: N802 - libcudart's names
        count._obj.value = self.devices
        return 0

    def cudaSetDevice(self, device: int) -> int:  # noqa: N802
        return 0 if device < self.devices else 101  # cudaErrorInvalidDevice

    def cudaGetErrorString(self, code: int) -> bytes:  # noqa: N802
        return b"invalid device ordinal"

    def cudaIpcOpenMemHandle(self, pointer: Any, handle: Any, flags: int) -> int:  # noqa: N802
        if self.fail_open:
            return 201
        buffer = self.buffers[bytes(handle)]
        pointer._obj.value = ctypes.addressof(buffer)
        return 0

    def cudaMemcpy(self, destination: int, source: int, size: int, kind: int) -> int:  # noqa: N802
        ctypes.memmove(destination, source, size)
        return 0

    def cudaIpcCloseMemHandle(self, pointer: int) -> int:  # noqa: N802
        self.closed.append(pointer)
        return 0

    def allocate(self, size: int) -> bytes:
        handle = uuid.uuid4().bytes * (_HANDLE_SIZE // 16)
        self.buffers[handle] = ctypes.create_string_buffer(size)
        return handle


@pytest.fixture
def cudart(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeCudart]:
    fake = _FakeCudart()
    monkeypatch.setattr(shared_memory, "_load_cudart", lambda: fake)
    monkeypatch.setattr(shared_memory, "_cuda", None)
    monkeypatch.setattr(shared_memory, "_cuda_checked", False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield fake


@pytest.fixture
def system_region() -> Iterator[str]:
    key = f"bertserve-test-{uuid.uuid4().hex}"
    path = f"/dev/shm/{key}"
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * 32)  # 8 KiB: an offset past the first page
    yield key
    os.unlink(path)


def test_cuda_regions_through_the_runtime(cudart: _FakeCudart) -> None:
    assert shared_memory.cuda_available()
    manager = SharedMemoryManager(allow=True)
    handle = cudart.allocate(64)
    manager.register_cuda("gpu", handle, 0, 64)
    assert manager.status("cuda") == [{"name": "gpu", "device_id": 0, "byte_size": 64}]
    assert manager.status("system") == []
    with manager.lease([("gpu", 8, 4)]):
        manager.write("gpu", 8, b"abcd")
        assert manager.read("gpu", 8, 4) == b"abcd"
    assert cudart.buffers[handle].raw[8:12] == b"abcd"
    with pytest.raises(InvalidInput, match="already in manager"):
        manager.register_cuda("gpu", handle, 0, 64)
    manager.unregister("cuda", "gpu")
    assert manager.status("cuda") == [] and len(cudart.closed) == 1


def test_cuda_registration_errors(cudart: _FakeCudart) -> None:
    manager = SharedMemoryManager(allow=True)
    with pytest.raises(InvalidInput, match="'region name' is necessary to register cuda"):
        manager.register_cuda("", b"\0" * _HANDLE_SIZE, 0, 8)
    with pytest.raises(InvalidInput, match="'raw_handle' must be a valid base64 encoded"):
        manager.register_cuda("r", b"short", 0, 8)
    with pytest.raises(InvalidInput, match="cudaSetDevice failed: invalid device ordinal"):
        manager.register_cuda("r", cudart.allocate(8), 3, 8)
    cudart.fail_open = True
    with pytest.raises(InvalidInput, match="failed to register shared memory region"):
        manager.register_cuda("r", cudart.allocate(8), 0, 8)
    assert manager.status("cuda") == []


def test_no_cuda_runtime_means_no_cuda_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> ctypes.CDLL:
        raise OSError("libcudart not found")

    monkeypatch.setattr(shared_memory, "_load_cudart", missing)
    monkeypatch.setattr(shared_memory, "_cuda", None)
    monkeypatch.setattr(shared_memory, "_cuda_checked", False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not shared_memory.cuda_available()
    manager = SharedMemoryManager(allow=True)
    with pytest.raises(InvalidInput, match="'r', GPUs not supported"):
        manager.register_cuda("r", b"\0" * _HANDLE_SIZE, 0, 8)
    with pytest.raises(InvalidInput, match="'r', GPUs not supported"):
        shared_memory._CudaRegion("r", b"\0" * _HANDLE_SIZE, 0, 8)


def test_hidden_gpus_mean_no_cuda(cudart: _FakeCudart, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not shared_memory.cuda_available()


def test_a_runtime_without_devices_is_no_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_memory, "_load_cudart", lambda: _FakeCudart(devices=0))
    monkeypatch.setattr(shared_memory, "_cuda", None)
    monkeypatch.setattr(shared_memory, "_cuda_checked", False)
    assert shared_memory._cuda_runtime() is None


def test_the_library_search_gives_up_with_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> ctypes.CDLL:
        raise OSError(name)

    monkeypatch.setattr(shared_memory.ctypes, "CDLL", refuse)
    with pytest.raises(OSError, match="libcudart not found"):
        shared_memory._load_cudart()


def test_one_namespace_for_both_kinds(cudart: _FakeCudart, system_region: str) -> None:
    manager = SharedMemoryManager(allow=True)
    manager.register_system("r", system_region, 0, 16)
    with pytest.raises(InvalidInput, match="shared memory region 'r' already in manager"):
        manager.register_cuda("r", cudart.allocate(8), 0, 8)
    with pytest.raises(ModelNotFound, match="registered as system shared memory, not CUDA"):
        manager.status("cuda", "r")
    manager.unregister("cuda", "r")  # another kind's region: not touched, as tritonserver
    assert [r["name"] for r in manager.status("system")] == ["r"]
    manager.close()
    assert manager.status("system") == []


def test_unregistering_a_region_in_use_waits_for_its_lease(system_region: str) -> None:
    manager = SharedMemoryManager(allow=True)
    manager.register_system("r", system_region, 4096 + 3, 16)  # offset past a page boundary
    with manager.lease([("r", 0, 4)]):
        assert manager.read("r", 0, 4) == bytes([3, 4, 5, 6])
        manager.unregister("system")
        assert [r["name"] for r in manager.status("system")] == ["r"]  # still listed
        gone = pytest.raises(ModelNotFound, match="Unable to find shared memory region: 'r'")
        with gone, manager.lease([("r", 0, 4)]):
            pass
    assert manager.status("system") == []


def test_system_registration_errors(system_region: str) -> None:
    manager = SharedMemoryManager(allow=True)
    with pytest.raises(InvalidInput, match="'region name' is necessary to register system"):
        manager.register_system("", system_region, 0, 8)
    with pytest.raises(InvalidInput, match="invalid shm key '/'"):
        manager.register_system("r", "/", 0, 8)
    with pytest.raises(InvalidInput, match="contains the reserved prefix"):
        manager.register_system("r", "/triton_python_backend_shm_region_1", 0, 8)
    with pytest.raises(InvalidInput, match="Unable to open shared memory region: '/a/b'"):
        manager.register_system("r", "/a/b", 0, 8)
    with pytest.raises(InvalidInput, match="failed to register shared memory region 'r'"):
        manager.register_system("r", system_region, 8000, 1000)


def test_off_unless_allowed() -> None:
    manager = SharedMemoryManager(allow=False)
    for call in (
        lambda: manager.register_system("r", "k", 0, 8),
        lambda: manager.register_cuda("r", b"", 0, 8),
        lambda: manager.unregister("system"),
    ):
        with pytest.raises(Unsupported, match=DISABLED.split(".")[0]):
            call()
