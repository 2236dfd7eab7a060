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

__all__ = [
    "ONNX_PLATFORM",
    "PERF_INPUT_FILE",
    "TOKENIZER_DIR",
    "model_config",
    "write_model_config",
    "write_perf_input_data",
]

ONNX_PLATFORM = "onnxruntime_onnx"
#: Tokenizer files live in <repo>/<model>/<version>/tokenizer/ (relative to the version folder).
TOKENIZER_DIR = "tokenizer"
#: perf_analyzer's `--input-data` for the model, in the model's folder (tritonserver and
#: bertserve ignore files there that are not config.pbtxt or a version folder).
PERF_INPUT_FILE = "perf_analyzer_input.json"


def model_config(variant: Variant, parameters: Mapping[str, str]) -> model_config_pb2.ModelConfig:
    """The scheduling part of the config; CPU variants also get their platform."""
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(name=variant.name, max_batch_size=variant.batching.max_batch_size)
    if variant.device == "cpu":
        config.platform = ONNX_PLATFORM
    batching = variant.batching
    # Triton fills preferred_batch_size with max_batch_size: write only other choices, so that
    # a tool that varies max_batch_size (Model Analyzer) does not carry a stale one along.
    if tuple(batching.preferred_batch_sizes) != (batching.max_batch_size,):
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


def write_perf_input_data(arrays: Mapping[str, object], model_dir: Path) -> Path:
    """Real tokenized requests (one per sample, shape [seq_len]) in perf_analyzer's input-data
    JSON: its default random data makes token ids outside the vocabulary, and the sequence
    axis of the model is dynamic, so perf_analyzer (and Model Analyzer, which runs it) needs
    both from somewhere."""
    import json

    import numpy as np

    columns = {name: np.asarray(array) for name, array in arrays.items()}
    samples = len(next(iter(columns.values())))
    data = [
        {
            name: {"content": column[i].reshape(-1).tolist(), "shape": list(column[i].shape)}
            for name, column in columns.items()
        }
        for i in range(samples)
    ]
    path = model_dir / PERF_INPUT_FILE
    path.write_text(json.dumps({"data": data}), encoding="utf-8")
    return path
