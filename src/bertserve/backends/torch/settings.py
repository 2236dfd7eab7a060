"""EngineSettings: everything an instance needs, read once from config.pbtxt and the
model's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.backends.base import Device
from bertserve.backends.parameters import ModelParameters
from bertserve.backends.torch.attention import ATTENTION_BACKENDS, PACKED_ATTENTION
from bertserve.backends.torch.buckets import (
    DEFAULT_SEQ_BUCKETS,
    default_batch_buckets,
    default_token_buckets,
)
from bertserve.backends.torch.encoder import GELU_MODES, PRECISIONS, EncoderOptions, read_config
from bertserve.backends.torch.kernels import triton_available

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = ["EngineSettings"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Everything an instance needs, read once from config.pbtxt (+ the model's config.json)."""

    encoder: EncoderOptions
    batch_buckets: tuple[int, ...]
    seq_buckets: tuple[int, ...]  # padded profiles; the last one is the longest row served
    cuda_graphs: bool
    has_token_types: bool
    #: Variable-length batching: rows packed back to back, graphs per token bucket.
    packing: bool = False
    token_buckets: tuple[int, ...] = ()
    max_rows: int = 1  # rows in one packed batch (max_batch_size)

    @classmethod
    def from_config(
        cls, config: model_config_pb2.ModelConfig, version_dir: Path, device: Device
    ) -> EngineSettings:
        params = ModelParameters(config)
        arch = read_config(version_dir)
        gpu = device.kind == "gpu"
        precision = params.choice("precision", "fp16" if gpu else "fp32", PRECISIONS)
        if not gpu and precision in ("fp16", "fp8"):
            precision = "fp32"  # CPU kernels for these are slow or missing: same math, fp32
        options = EncoderOptions(
            precision=precision,
            gelu=params.choice("gelu", "erf", GELU_MODES),
            attention=params.choice("attention", "auto", ATTENTION_BACKENDS),
            packed_attention=params.choice(
                "packed_attention", "triton" if triton_available() else "flash", PACKED_ATTENTION
            ),
            fused_layernorm=params.boolean("fused_layernorm", True),
            fp8_fast_accum=params.boolean("fp8_fast_accum", True),
        )
        batch = params.integers(
            "batch_buckets", default_batch_buckets(config.max_batch_size), minimum=1
        )
        if config.max_batch_size > 0 and batch[-1] > config.max_batch_size:
            raise params.invalid(
                "batch_buckets",
                f"must not exceed max_batch_size {config.max_batch_size}: lower the buckets "
                "or raise max_batch_size",
            )
        seq = params.integers(
            "seq_buckets",
            _fixed_length(config)
            or tuple(s for s in DEFAULT_SEQ_BUCKETS if s <= arch.max_positions)
            or (arch.max_positions,),  # a model shorter than every default bucket
            minimum=1,
        )
        if seq[-1] > arch.max_positions:
            raise params.invalid(
                "seq_buckets",
                f"must not exceed the model's max_position_embeddings {arch.max_positions}",
            )
        graphs = params.boolean("cuda_graphs", True) and gpu
        if not params.boolean("packing", False):
            return cls(options, batch, seq, graphs, arch.type_vocab > 0)
        if config.max_batch_size < 1:
            raise params.invalid(
                "packing",
                "needs max_batch_size >= 1 (rows are packed into batches): set max_batch_size "
                "or turn packing off",
            )
        max_tokens = params.integer(
            "max_tokens", min(32768, config.max_batch_size * seq[-1]), minimum=1
        )
        if max_tokens < seq[-1]:
            raise params.invalid(
                "max_tokens",
                f"must hold the longest row ({seq[-1]} tokens, the last of seq_buckets)",
            )
        tokens = params.integers("token_buckets", default_token_buckets(max_tokens), minimum=1)
        if tokens[-1] < seq[-1]:
            raise params.invalid(
                "token_buckets",
                f"must reach the longest row ({seq[-1]} tokens, the last of seq_buckets)",
            )
        return cls(
            options, batch, seq, graphs, arch.type_vocab > 0,
            packing=True, token_buckets=tokens, max_rows=config.max_batch_size,
        )  # fmt: skip


def _fixed_length(config: model_config_pb2.ModelConfig) -> tuple[int, ...] | None:
    for entry in config.input:
        dims = list(entry.dims)
        if dims and dims[-1] > 0:
            return (int(dims[-1]),)
    return None
