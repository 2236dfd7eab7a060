"""config.pbtxt for a built model, written from Triton's own schema (`model_config_pb2`).

Like the reference repository, no `input`/`output` sections are written: the server completes
them from the model file (Triton's auto-complete). Facts about the build that a report needs
(weights random or real, precision, sequence length, tokenizer location) go into `parameters`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.builder.presets import Variant

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = ["ONNX_PLATFORM", "TOKENIZER_DIR", "model_config", "write_model_config"]

ONNX_PLATFORM = "onnxruntime_onnx"
#: Tokenizer files live in <repo>/<model>/<version>/tokenizer/ (relative to the version folder).
TOKENIZER_DIR = "tokenizer"


def model_config(variant: Variant, parameters: Mapping[str, str]) -> model_config_pb2.ModelConfig:
    """The scheduling part of the config; CPU variants also get their platform."""
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(name=variant.name, max_batch_size=variant.batching.max_batch_size)
    if variant.device == "cpu":
        config.platform = ONNX_PLATFORM
    batching = variant.batching
    config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    group = config.instance_group.add()
    group.count = batching.instances
    group.kind = (
        pb.ModelInstanceGroup.KIND_CPU
        if variant.device == "cpu"
        else pb.ModelInstanceGroup.KIND_GPU
    )
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def write_model_config(config: model_config_pb2.ModelConfig, model_dir: Path) -> Path:
    from google.protobuf import text_format

    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config), encoding="utf-8")
    return path
