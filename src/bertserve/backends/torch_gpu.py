"""The `bertserve_torch` backend: BERT QA from model.safetensors on a GPU, engine-style.

At load time each instance prepares its "engine": for every optimization profile, a
(batch bucket, sequence bucket) pair, it captures CUDA graphs of the whole forward pass
(one without an attention mask, the fastest kernels, and one with), on the instance's own
CUDA stream. A request batch is padded to the smallest profile that fits and replayed;
`batch_buckets` tells the dynamic batcher which sizes run natively.

config.pbtxt parameters (all optional, string values):

| key | default | meaning |
|---|---|---|
| precision | fp16 (GPU), fp32 (CPU) | fp16, bf16, fp32 or fp8 (FP8 GEMMs, bf16 elsewhere) |
| batch_buckets | 1, 4, 16, ... up to max_batch_size | batch sizes of the profiles |
| seq_buckets | fixed input length, else 128,384 (capped by the model) | profile lengths |
| cuda_graphs | true | capture a graph per profile (GPU only) |
| attention | auto | SDPA kernel for unmasked batches: auto, flash, cudnn, efficient, math |
| gelu | erf | erf, or tanh (bias+GELU in the GEMM epilogue) |
| fused_layernorm | true | Triton residual-add + LayerNorm kernel on CUDA |
| fp8_fast_accum | true | FP8 GEMMs accumulate in the tensor cores' fast (less exact) mode |

Inputs `input_ids`, `attention_mask`, `token_type_ids` (INT64, [-1]; DistilBERT has no
token_type_ids); outputs `start_logits`, `end_logits` (FP32, [-1]).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertserve.backends.base import Backend, Device, LoadContext, ModelInstance
from bertserve.backends.torch_encoder import EncoderOptions, QAEncoder, load_encoder, read_config
from bertserve.booleans import parse_bool
from bertserve.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = [
    "EngineSettings",
    "TorchBackend",
    "TorchInstance",
    "default_batch_buckets",
    "pick_bucket",
    "plan_chunks",
]

INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS = "input_ids", "attention_mask", "token_type_ids"
START_LOGITS, END_LOGITS = "start_logits", "end_logits"
DEFAULT_SEQ_BUCKETS = (128, 384)


# ---- buckets (pure functions; the tests drive them directly) --------------------------------
def default_batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of four up to max_batch_size, plus max_batch_size: 4 -> (1, 4), as the
    reference's TensorRT profiles; 256 -> (1, 4, 16, 64, 256)."""
    top = max(1, max_batch_size)
    out = []
    b = 1
    while b < top:
        out.append(b)
        b *= 4
    out.append(top)
    return tuple(out)


def pick_bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n; the largest if none is."""
    for b in sorted(buckets):
        if b >= n:
            return b
    return max(buckets)


def plan_chunks(n: int, buckets: Sequence[int]) -> list[tuple[int, int, int]]:
    """Split n rows into (start, stop, bucket) pieces: full largest buckets first, then the
    remainder padded to the smallest bucket that holds it."""
    top = max(buckets)
    chunks = []
    start = 0
    while n - start > top:
        chunks.append((start, start + top, top))
        start += top
    if n > start:
        chunks.append((start, n, pick_bucket(n - start, buckets)))
    return chunks


def _parse_ints(text: str, key: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.replace(";", ",").split(",") if v.strip()}))
    except ValueError:
        raise ConfigError(f"parameter {key} '{text}' must be comma-separated integers") from None
    if not values or values[0] < 1:
        raise ConfigError(f"parameter {key} '{text}' must list positive integers")
    return values


def _parse_bool(text: str, key: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError:
        raise ConfigError(f"parameter {key} '{text}' must be true or false") from None


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Everything an instance needs, read once from config.pbtxt (+ the model's config.json)."""

    encoder: EncoderOptions
    batch_buckets: tuple[int, ...]
    seq_buckets: tuple[int, ...]
    cuda_graphs: bool
    has_token_types: bool

    @classmethod
    def from_config(
        cls, config: model_config_pb2.ModelConfig, version_dir: Path, device: Device
    ) -> EngineSettings:
        params = {k: v.string_value for k, v in config.parameters.items()}
        arch = read_config(version_dir)
        gpu = device.kind == "gpu"
        precision = params.get("precision", "fp16" if gpu else "fp32")
        if not gpu and precision in ("fp16", "fp8"):
            precision = "fp32"  # CPU kernels for these are slow or missing: same math, fp32
        options = EncoderOptions(
            precision=precision,
            gelu=params.get("gelu", "erf"),
            attention=params.get("attention", "auto"),
            fused_layernorm=_parse_bool(params.get("fused_layernorm", "true"), "fused_layernorm"),
            fp8_fast_accum=_parse_bool(params.get("fp8_fast_accum", "true"), "fp8_fast_accum"),
        )
        if "batch_buckets" in params:
            batch = _parse_ints(params["batch_buckets"], "batch_buckets")
        else:
            batch = default_batch_buckets(config.max_batch_size)
        if config.max_batch_size > 0 and batch[-1] > config.max_batch_size:
            raise ConfigError(
                f"parameter batch_buckets {list(batch)} exceeds max_batch_size "
                f"{config.max_batch_size}: lower the buckets or raise max_batch_size"
            )
        if "seq_buckets" in params:
            seq = _parse_ints(params["seq_buckets"], "seq_buckets")
        else:
            seq = (
                _fixed_length(config)
                or tuple(s for s in DEFAULT_SEQ_BUCKETS if s <= arch.max_positions)
                or (arch.max_positions,)  # a model shorter than every default bucket
            )
        if seq[-1] > arch.max_positions:
            raise ConfigError(
                f"parameter seq_buckets {list(seq)} exceeds the model's "
                f"max_position_embeddings {arch.max_positions}"
            )
        graphs = _parse_bool(params.get("cuda_graphs", "true"), "cuda_graphs") and gpu
        return cls(options, batch, seq, graphs, arch.type_vocab > 0)


def _fixed_length(config: model_config_pb2.ModelConfig) -> tuple[int, ...] | None:
    for entry in config.input:
        dims = list(entry.dims)
        if dims and dims[-1] > 0:
            return (int(dims[-1]),)
    return None


# ---- backend -------------------------------------------------------------------------------
class TorchBackend(Backend):
    name = "bertserve_torch"
    platforms = ()
    default_model_filename = "model.safetensors"

    def autocomplete(self, config: model_config_pb2.ModelConfig, model_path: Path) -> None:
        from bertserve.backends.io_spec import TensorSpec, complete_io

        arch = read_config(model_path)
        weights = model_path / (config.default_model_filename or self.default_model_filename)
        if not weights.is_file():
            raise ConfigError(f"model file {weights} not found")
        lead = (-1, -1)  # [batch, tokens]; complete_io drops the batch axis when batching
        names = [INPUT_IDS, ATTENTION_MASK] + ([TOKEN_TYPE_IDS] if arch.type_vocab else [])
        inputs = [TensorSpec(n, "INT64", lead) for n in names]
        outputs = [TensorSpec(n, "FP32", lead) for n in (START_LOGITS, END_LOGITS)]
        complete_io(config, inputs, outputs, source=str(weights))
        config.backend = self.name

    def load(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        device: Device,
        context: LoadContext,
    ) -> ModelInstance:
        settings = EngineSettings.from_config(config, model_path, device)
        filename = config.default_model_filename or self.default_model_filename
        return TorchInstance(model_path, filename, settings, device)


# ---- shared weights ------------------------------------------------------------------------
_WeightsKey = tuple[str, str, EncoderOptions]
_weights_lock = threading.Lock()
#: key -> [encoder, number of live instances using it]
_weights: dict[_WeightsKey, list[Any]] = {}


def _acquire_encoder(
    version_dir: Path, filename: str, options: EncoderOptions, device: str
) -> tuple[_WeightsKey, QAEncoder]:
    """Instances of one model on one device share one copy of the weights."""
    key = (str((version_dir / filename).resolve()), device, options)
    with _weights_lock:
        if key not in _weights:
            _weights[key] = [load_encoder(version_dir, filename, options, device), 0]
        _weights[key][1] += 1
        return key, _weights[key][0]


def _release_encoder(key: _WeightsKey) -> None:
    with _weights_lock:
        entry = _weights.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del _weights[key]


# ---- instance ------------------------------------------------------------------------------
_capture_lock = threading.Lock()


class _Profile:
    """One (batch, seq) bucket: static device buffers, two graphs (with and without an
    attention mask), and two pinned host staging slots, so one batch can be filled in while
    the one before it still runs (launches alternate between the slots)."""

    def __init__(self, instance: TorchInstance, batch: int, seq: int) -> None:
        import torch

        self.batch, self.seq = batch, seq
        dev = instance.torch_device
        self.enc = instance.encoder
        self.stream = instance.stream
        pin = dev.type == "cuda"
        self.host_in = torch.zeros((2, 3, batch, seq), dtype=torch.int64, pin_memory=pin)
        self.host_in_np = self.host_in.numpy()
        self.dev_in = torch.zeros((3, batch, seq), dtype=torch.int64, device=dev)
        self.dev_in[1].fill_(1)
        self.host_out = torch.empty((2, 2, batch, seq), dtype=torch.float32, pin_memory=pin)
        self.host_out_np = self.host_out.numpy()
        self.dev_out = {
            dense: torch.empty((2, batch, seq), dtype=torch.float32, device=dev)
            for dense in (True, False)
        }
        self.done = [torch.cuda.Event(), torch.cuda.Event()] if pin else []
        self.slot = 0
        self.graphs: dict[bool, Any] = {}
        self.has_types = instance.settings.has_token_types

    def compute(self, dense: bool) -> None:
        """The forward pass on the static buffers (what a graph captures)."""
        ids, mask, types = self.dev_in[0], self.dev_in[1], self.dev_in[2]
        out = self.enc.forward(ids, types if self.has_types else None, None if dense else mask)
        self.dev_out[dense].copy_(out)

    def capture(self, pool: Any) -> None:
        import torch

        for dense in (True, False):
            with torch.cuda.stream(self.stream):
                for _ in range(2):  # warm-up: cuBLAS handles, Triton compiles, SDPA choice
                    self.compute(dense)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads keep serving (allocating, synchronizing) while this
            # one captures; the default "global" mode would fail their calls or this capture.
            with torch.cuda.graph(
                graph, pool=pool, stream=self.stream, capture_error_mode="thread_local"
            ):
                self.compute(dense)
            self.graphs[dense] = graph
        self.stream.synchronize()

    def replay(self, dense: bool) -> None:
        """Run the forward pass on what dev_in holds (graph when captured)."""
        if dense in self.graphs:
            self.graphs[dense].replay()
        else:
            self.compute(dense)

    def launch(
        self, ids: np.ndarray, mask: np.ndarray | None, types: np.ndarray | None
    ) -> Callable[[], np.ndarray]:
        """Pad (n, L) inputs into the next staging slot and start the pass on the stream;
        the returned callable waits and gives the (2, n, L) float32 logits, a view of the
        slot that stays valid until the launch after next on this profile."""
        slot = self.slot
        self.slot ^= 1
        n, length = ids.shape
        h = self.host_in_np[slot]
        h[0, :n, :length] = ids
        h[1, :n, :length] = 1 if mask is None else mask
        h[2, :n, :length] = 0 if types is None else types
        if length < self.seq:
            h[:, :n, length:] = 0
        if n < self.batch:
            h[:, n:] = 0
            h[1, n:, :] = 1  # padding rows attend somewhere: finite garbage, discarded
        dense = length == self.seq and (mask is None or bool(mask.all()))
        out = self.host_out_np[slot, :, :n, :length]
        if self.stream is None:  # CPU: runs here and now
            self.dev_in.copy_(self.host_in[slot])
            self.compute(dense)
            self.host_out[slot].copy_(self.dev_out[dense])
            return lambda: out
        import torch

        # Stream order keeps the shared device buffers safe: this copy-in lands after the
        # previous pass has read dev_in, and its copy-out before this pass writes dev_out.
        with torch.cuda.stream(self.stream):
            self.dev_in.copy_(self.host_in[slot], non_blocking=True)
            self.replay(dense)
            self.host_out[slot].copy_(self.dev_out[dense], non_blocking=True)
            self.done[slot].record(self.stream)
        done = self.done[slot]

        def wait() -> np.ndarray:
            done.synchronize()
            return out

        return wait


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
        self._weights_key: _WeightsKey | None
        self._weights_key, self.encoder = _acquire_encoder(
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
            ctx = _nullcontext()
        with ctx, torch.inference_mode():
            self.profiles = {
                (b, s): _Profile(self, b, s)
                for b in settings.batch_buckets
                for s in settings.seq_buckets
            }
            self.profiles_built = tuple(self.profiles)
            if settings.cuda_graphs:
                pool = torch.cuda.graph_pool_handle()
                # Largest first: later (smaller) captures reuse the pool's blocks. One capture
                # at a time in the process (models load on several threads).
                with _capture_lock:
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
            torch.cuda.device(self.torch_device) if self.stream is not None else _nullcontext()
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
                _release_encoder(self._weights_key)
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


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
