"""The GPUs this process may use, as NVML lists them and CUDA_VISIBLE_DEVICES narrows them:
shared by the GPU metrics and by pricing this machine."""

from __future__ import annotations

from typing import Any

__all__ = ["visible_gpu_filter", "visible_gpu_handles"]


def visible_gpu_filter(environ: dict[str, str]) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of indices or UUID prefixes; None = every GPU."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def visible_gpu_handles(nvml: Any, visible: list[str] | None) -> list[tuple[str, Any]]:
    """(uuid, NVML handle) of each GPU that `visible` (visible_gpu_filter's list) leaves."""
    handles = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        if visible is not None and not any(v == str(index) or uuid.startswith(v) for v in visible):
            continue
        handles.append((uuid, handle))
    return handles
