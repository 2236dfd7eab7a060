"""TorchInstance: one engine instance on one device, with its own stream and graphs."""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bertserve.backends.base import Device, InFlight, ModelInstance
from bertserve.backends.packing import PackedBatch, PackingSpec, pack, unpack
from bertserve.backends.torch.buckets import (
    pick_bucket,
    pick_token_bucket,
    plan_chunks,
    plan_token_chunks,
    row_capacity,
)
from bertserve.backends.torch.names import (
    ATTENTION_MASK,
    END_LOGITS,
    INPUT_IDS,
    START_LOGITS,
    TOKEN_TYPE_IDS,
)
from bertserve.backends.torch.packed import PackedProfile
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
        self.batch_buckets: tuple[int, ...] | None = settings.batch_buckets
        self.asynchronous = self.torch_device.type == "cuda"
        self.seq_buckets = settings.seq_buckets
        self.max_row = settings.seq_buckets[-1]
        self._lock = threading.Lock()
        self.stream: Any = None
        ctx: Any
        if self.torch_device.type == "cuda":
            # torch.cuda.Stream.__new__ carries no annotations (torch 2.13).
            self.stream = torch.cuda.Stream(self.torch_device)  # type: ignore[no-untyped-call]
            ctx = torch.cuda.device(self.torch_device)
        else:
            ctx = contextlib.nullcontext()
        self.profiles: dict[tuple[int, int], Profile] = {}
        self.packed: dict[int, PackedProfile] = {}
        with ctx, torch.inference_mode():
            graphs: list[Any]  # Profile or PackedProfile, largest first
            if settings.packing:
                top = settings.token_buckets[-1]
                self.packing = PackingSpec(
                    max_tokens=top,
                    max_rows=row_capacity(top, settings.max_rows),
                    length_input=ATTENTION_MASK,
                )
                self.batch_buckets = None  # any row count is native: the batcher packs
                self.packed = {
                    t: PackedProfile(self, t, row_capacity(t, settings.max_rows), self.max_row)
                    for t in settings.token_buckets
                }
                self.profiles_built = tuple((p.rows, p.tokens) for p in self.packed.values())
                graphs = sorted(self.packed.values(), key=lambda p: p.tokens, reverse=True)
            else:
                self.profiles = {
                    (b, s): Profile(self, b, s)
                    for b in settings.batch_buckets
                    for s in settings.seq_buckets
                }
                self.profiles_built = tuple(self.profiles)
                graphs = sorted(self.profiles.values(), key=lambda p: p.batch * p.seq, reverse=True)
            if settings.cuda_graphs:
                pool = torch.cuda.graph_pool_handle()
                # Largest first: later (smaller) captures reuse the pool's blocks. One capture
                # at a time in the process (models load on several threads).
                with capture_lock:
                    for profile in graphs:
                        profile.capture(pool)

    def check_request(self, inputs: Mapping[str, np.ndarray]) -> None:
        """One request's checks on the event loop, so a bad one fails alone: ids inside the
        vocabulary (an out-of-range index on the GPU is a device-side assert that kills the
        CUDA context for every model on it), inputs of one shape, rows no longer than the
        longest profile. (A packing model's mask is checked where its rows are measured: the
        scheduler's admission, `pack`.)"""
        ids = _as_2d(inputs, INPUT_IDS, required=True)
        assert ids is not None
        self._check_ids(ids, _as_2d(inputs, TOKEN_TYPE_IDS, like=ids))
        _as_2d(inputs, ATTENTION_MASK, like=ids)
        if ids.shape[1] > self.max_row:
            raise InvalidInput(
                f"input '{INPUT_IDS}' has {ids.shape[1]} tokens and this model's longest row "
                f"holds {self.max_row}: split the text into windows of at most that"
            )

    def _check_ids(self, ids: np.ndarray, types: np.ndarray | None) -> None:
        _check_range(ids, INPUT_IDS, self.encoder.config.vocab)
        if types is not None:
            _check_range(types, TOKEN_TYPE_IDS, max(1, self.encoder.config.type_vocab))

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self.launch(inputs, outputs)()

    def launch(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> InFlight[dict[str, np.ndarray]]:
        """Start the batch on this instance's stream; the callable waits for its logits.
        A batch larger than the largest profile runs in pieces, one after another. A
        packing instance packs the rows (trimmed to their masks) and runs them that way."""
        import torch

        spec = self.packing
        if spec is not None:
            self.check_request(inputs)
            batch = pack([inputs], spec)
            return self.launch_packed(batch, outputs).then(
                lambda logits: unpack(logits, batch, spec.fill)[0]
            )
        ids = _as_2d(inputs, INPUT_IDS, required=True)
        assert ids is not None
        mask = _as_2d(inputs, ATTENTION_MASK, like=ids)
        types = _as_2d(inputs, TOKEN_TYPE_IDS, like=ids)
        n, length = ids.shape
        if length > self.max_row:
            raise InvalidInput(
                f"input '{INPUT_IDS}' has {length} tokens and this model's longest profile "
                f"holds {self.max_row}: split the text into windows of at most that"
            )
        self._check_ids(ids, types)
        seq = pick_bucket(length, self.seq_buckets)
        chunks = plan_chunks(n, self.settings.batch_buckets)

        def start(lo: int, hi: int, bucket: int) -> InFlight[np.ndarray]:
            return self.profiles[(bucket, seq)].launch(
                ids[lo:hi],
                None if mask is None else mask[lo:hi],
                None if types is None else types[lo:hi],
            )

        with self._lock, self._device(), torch.inference_mode():
            if len(chunks) > 1:  # each piece is copied out before a later one reuses its slot
                logits = np.empty((2, n, length), dtype=np.float32)
                for lo, hi, bucket in chunks:
                    logits[:, lo:hi] = start(lo, hi, bucket)()
                return InFlight(lambda: _named(logits, outputs))
            ((lo, hi, bucket),) = chunks
            running = start(lo, hi, bucket)
        return running.then(lambda logits: _named(logits.copy(), outputs))

    def launch_packed(
        self, batch: PackedBatch, outputs: list[str]
    ) -> InFlight[dict[str, np.ndarray]]:
        """Start a packed batch: the smallest token bucket that holds it, or, for a batch
        over the largest, pieces one after another. Outputs per token, (tokens,)."""
        import torch

        if not self.packed:
            raise InvalidInput("this instance does not pack rows: set parameter packing true")
        lengths = batch.lengths
        if len(lengths) and int(lengths.max()) > self.max_row:
            raise InvalidInput(
                f"a row of {int(lengths.max())} tokens is longer than this model's longest row "
                f"({self.max_row}): split the text into windows of at most that"
            )
        ids = batch.tokens[INPUT_IDS]
        self._check_ids(ids, batch.tokens.get(TOKEN_TYPE_IDS))
        top = max(self.packed)
        spec = self.packing
        assert spec is not None
        chunks = plan_token_chunks(lengths.tolist(), top, spec.max_rows)
        if not chunks:  # no tokens at all (every row masked out)
            return InFlight(lambda: _named(np.empty((2, 0), dtype=np.float32), outputs))
        bounds = np.concatenate([[0], np.cumsum(lengths)])

        def start(rows: range) -> InFlight[np.ndarray]:
            lo, hi = int(bounds[rows.start]), int(bounds[rows.stop])
            part = lengths[rows.start : rows.stop]
            bucket = pick_token_bucket(hi - lo, len(part), tuple(self.packed), spec.max_rows)
            tokens = {name: array[lo:hi] for name, array in batch.tokens.items()}
            return self.packed[bucket].launch(tokens, batch.positions[lo:hi], part)

        with self._lock, self._device(), torch.inference_mode():
            if len(chunks) > 1:
                # One piece launched ahead of the one being copied out: a profile has two
                # staging slots, so a piece's slot is reused only after it was copied.
                pieces: list[np.ndarray] = []
                waits = collections.deque([start(chunks[0])])
                for rows in chunks[1:]:
                    waits.append(start(rows))
                    pieces.append(waits.popleft()().copy())
                pieces.append(waits.popleft()().copy())
                result = _named(np.concatenate(pieces, axis=1), outputs)
                return InFlight(lambda: result)
            running = start(chunks[0])
        return running.then(lambda logits: _named(logits.copy(), outputs))

    def _device(self) -> Any:
        import torch

        if self.stream is None:
            return contextlib.nullcontext()
        return torch.cuda.device(self.torch_device)

    def close(self) -> None:
        """Drop graphs and buffers; the weights go with the model's last instance."""
        with self._lock:
            self.profiles.clear()
            self.packed.clear()
            if self._weights_key is not None:
                release_encoder(self._weights_key)
                self._weights_key = None


def _named(logits: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    both = {START_LOGITS: logits[0], END_LOGITS: logits[1]}
    return {name: both[name] for name in outputs if name in both}


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
    if not arr.size:
        return
    if arr.dtype == np.int64 and arr.flags.c_contiguous:
        # One pass instead of a min and a max: as unsigned, a negative id is huge.
        bad = int(arr.view(np.uint64).max()) >= limit
    else:
        bad = int(arr.min()) < 0 or int(arr.max()) >= limit
    if bad:
        raise InvalidInput(
            f"input '{name}' holds ids outside [0, {limit}): tokenize with this model's vocabulary"
        )
