"""EngineSettings: everything an instance needs, read once from config.pbtxt and the
model's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.backends.base import Device
from bertserve.backends.torch.buckets import (
    DEFAULT_SEQ_BUCKETS,
    default_batch_buckets,
    default_token_buckets,
)
from bertserve.backends.torch.encoder import EncoderOptions, read_config
from bertserve.booleans import parse_bool
from bertserve.errors import ConfigError

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = ["EngineSettings"]


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
        packing = _parse_bool(params.get("packing", "false"), "packing")
        if not packing:
            return cls(options, batch, seq, graphs, arch.type_vocab > 0)
        if config.max_batch_size < 1:
            raise ConfigError(
                "parameter packing needs max_batch_size >= 1 (rows are packed into batches); "
                "set max_batch_size or turn packing off"
            )
        if "token_buckets" in params:
            tokens = _parse_ints(params["token_buckets"], "token_buckets")
        else:
            max_tokens = min(32768, config.max_batch_size * seq[-1])
            if "max_tokens" in params:
                (max_tokens,) = _parse_ints(params["max_tokens"], "max_tokens")[-1:]
            if max_tokens < seq[-1]:
                raise ConfigError(
                    f"parameter max_tokens {max_tokens} is below the longest row "
                    f"({seq[-1]} tokens, the last of seq_buckets): raise it"
                )
            tokens = default_token_buckets(max_tokens)
        if tokens[-1] < seq[-1]:
            raise ConfigError(
                f"parameter token_buckets {list(tokens)} must reach the longest row "
                f"({seq[-1]} tokens, the last of seq_buckets)"
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
