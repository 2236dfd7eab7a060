"""TorchInstance: one engine instance on one device, with its own stream and graphs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bertserve.backends.base import Device, ModelInstance
from bertserve.backends.torch.buckets import pick_bucket, plan_chunks
from bertserve.backends.torch.names import (
    ATTENTION_MASK,
    END_LOGITS,
    INPUT_IDS,
    START_LOGITS,
    TOKEN_TYPE_IDS,
)
from bertserve.backends.torch.profile import Profile, capture_lock
from bertserve.backends.torch.settings import EngineSettings
from bertserve.backends.torch.weights import WeightsKey, acquire_encoder, release_encoder
from bertserve.errors import ConfigError, InvalidInput

__all__ = ["TorchInstance"]


class TorchInstance(ModelInstance):
    """One engine instance on one device, with its own stream and graphs."""

    def __init__(
        self, version_dir: Path, filename: str, settings: EngineSettings, device: Device
    ) -> None:
        import torch

        if device.kind == "gpu" and not torch.cuda.is_available():
            raise ConfigError(
                "instance_group kind KIND_GPU needs a CUDA GPU and this torch sees none; "
                "use KIND_CPU (same engine, float32, no CUDA graphs)"
            )
        self.settings = settings
        self.device = device
        self.torch_device = (
            torch.device("cuda", device.gpu_id or 0)
            if device.kind == "gpu"
            else torch.device("cpu")
        )
        self._weights_key: WeightsKey | None
        self._weights_key, self.encoder = acquire_encoder(
            version_dir, filename, settings.encoder, str(self.torch_device)
        )
        self.batch_buckets: tuple[int, ...] = settings.batch_buckets
        self.asynchronous = self.torch_device.type == "cuda"
        self.seq_buckets = settings.seq_buckets
        self._lock = threading.Lock()
        self.stream: Any = None
        ctx: Any
        if self.torch_device.type == "cuda":
            self.stream = torch.cuda.Stream(self.torch_device)
            ctx = torch.cuda.device(self.torch_device)
        else:
            ctx = contextlib.nullcontext()
        with ctx, torch.inference_mode():
            self.profiles = {
                (b, s): Profile(self, b, s)
                for b in settings.batch_buckets
                for s in settings.seq_buckets
            }
            self.profiles_built = tuple(self.profiles)
            if settings.cuda_graphs:
                pool = torch.cuda.graph_pool_handle()
                # Largest first: later (smaller) captures reuse the pool's blocks. One capture
                # at a time in the process (models load on several threads).
                with capture_lock:
                    for key in sorted(self.profiles, key=lambda k: k[0] * k[1], reverse=True):
                        self.profiles[key].capture(pool)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self.launch(inputs, outputs)()

    def launch(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        """Start the batch on this instance's stream; the callable waits for its logits.
        A batch larger than the largest profile runs in pieces, one after another."""
        import torch

        ids = _as_2d(inputs, INPUT_IDS, required=True)
        assert ids is not None
        mask = _as_2d(inputs, ATTENTION_MASK, like=ids)
        types = _as_2d(inputs, TOKEN_TYPE_IDS, like=ids)
        n, length = ids.shape
        if length > self.seq_buckets[-1]:
            raise InvalidInput(
                f"input '{INPUT_IDS}' has {length} tokens and this model's longest profile "
                f"holds {self.seq_buckets[-1]}: split the text into windows of at most that"
            )
        # An out-of-range index on the GPU is a device-side assert that kills the CUDA
        # context for every model on it: refuse it here instead.
        _check_range(ids, INPUT_IDS, self.encoder.config.vocab)
        if types is not None:
            _check_range(types, TOKEN_TYPE_IDS, max(1, self.encoder.config.type_vocab))
        seq = pick_bucket(length, self.seq_buckets)
        chunks = plan_chunks(n, self.settings.batch_buckets)
        ctx: Any = (
            torch.cuda.device(self.torch_device)
            if self.stream is not None
            else contextlib.nullcontext()
        )

        def start(lo: int, hi: int, bucket: int) -> Callable[[], np.ndarray]:
            return self.profiles[(bucket, seq)].launch(
                ids[lo:hi],
                None if mask is None else mask[lo:hi],
                None if types is None else types[lo:hi],
            )

        def named(logits: np.ndarray) -> dict[str, np.ndarray]:
            both = {START_LOGITS: logits[0], END_LOGITS: logits[1]}
            return {name: both[name] for name in outputs if name in both}

        with self._lock, ctx, torch.inference_mode():
            if len(chunks) > 1:  # each piece is copied out before a later one reuses its slot
                logits = np.empty((2, n, length), dtype=np.float32)
                for lo, hi, bucket in chunks:
                    logits[:, lo:hi] = start(lo, hi, bucket)()
                result = named(logits)
                return lambda: result
            ((lo, hi, bucket),) = chunks
            wait = start(lo, hi, bucket)
        return lambda: named(wait().copy())

    def close(self) -> None:
        """Drop graphs and buffers; the weights go with the model's last instance."""
        with self._lock:
            self.profiles.clear()
            if self._weights_key is not None:
                release_encoder(self._weights_key)
                self._weights_key = None


def _as_2d(
    inputs: Mapping[str, np.ndarray], name: str, *, required: bool = False, like: Any = None
) -> np.ndarray | None:
    if name not in inputs:
        if required:
            raise InvalidInput(f"input '{name}' is missing: send {INPUT_IDS} (and the mask)")
        return None
    arr = np.asarray(inputs[name])
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidInput(f"input '{name}' has shape {list(arr.shape)}; expected [batch, tokens]")
    if like is not None and arr.shape != like.shape:
        raise InvalidInput(
            f"input '{name}' has shape {list(arr.shape)} but {INPUT_IDS} has {list(like.shape)}"
        )
    return arr


def _check_range(arr: np.ndarray, name: str, limit: int) -> None:
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= limit):
        raise InvalidInput(
            f"input '{name}' holds ids outside [0, {limit}): tokenize with this model's vocabulary"
        )
