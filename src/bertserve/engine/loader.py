"""Turn a model folder into running instances: complete the config, place instances, warm up.

Everything here blocks (reads files, builds sessions); the engine calls it from a thread."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2

from bertserve.backends.base import (
    Backend,
    Device,
    LoadContext,
    ModelInstance,
    StartModel,
    backend_for_config,
)
from bertserve.backends.parameters import confined_file
from bertserve.batching.policy import BatchingPolicy
from bertserve.errors import ConfigError
from bertserve.repository import ModelSource, select_versions
from bertserve.repository.normalize import fill_backend_fields, normalize, place_instance_groups
from bertserve.repository.validation import (
    validate_instance_groups,
    validate_io_config,
    validate_model_config,
)
from bertserve.tensors import config_type_to_datatype, datatype_to_numpy

__all__ = [
    "CompletionSettings",
    "create_instances",
    "devices",
    "prepare_config",
    "visible_gpus",
    "warm_up",
]

_GROUP = model_config_pb2.ModelInstanceGroup


def visible_gpus() -> list[int]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES respected by CUDA itself)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    try:
        import torch
    except ImportError:
        return []
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@dataclass(frozen=True, slots=True)
class CompletionSettings:
    """How configs are completed: `--disable-auto-complete-config` and `--backend-config`."""

    auto_complete: bool = True
    #: backend name -> {setting: value}; the "" entry holds the global settings, which a
    #: backend's own override.
    backend_config: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def options(self, backend: str) -> dict[str, str]:
        return {**self.backend_config.get("", {}), **self.backend_config.get(backend, {})}


def prepare_config(
    source: ModelSource,
    override: model_config_pb2.ModelConfig | None,
    completion: CompletionSettings | None = None,
    gpus: list[int] | None = None,
) -> tuple[model_config_pb2.ModelConfig, Backend, list[int]]:
    """The completed config, its backend and the versions to serve, in tritonserver's order:
    the backend fields and defaults, the model-wide checks (before any version folder is
    looked at), the instance groups, the versions, the backend's completion from the model
    file, then the tensors' checks."""
    completion = completion or CompletionSettings()
    gpus = visible_gpus() if gpus is None else gpus
    if override is None and not source.config_file and not completion.auto_complete:
        raise ConfigError(
            f"model '{source.name}' has no config.pbtxt, which --disable-auto-complete-config "
            "requires: write one, or let the server complete it from the model file"
        )
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(override if override is not None else source.config)
    config.name = source.name
    fill_backend_fields(config, source.path)
    normalize(config)
    validate_model_config(config)
    _refuse_unserved(config)
    # Tensors written in full are never changed by completion: check them before anything is
    # read from the model folder, so a bad field is named even without a version folder.
    written = bool(config.input or config.batch_input) and bool(config.output)
    if written or not completion.auto_complete:
        validate_io_config(config)
    backend = backend_for_config(config)
    place_instance_groups(config, gpus, backend.gpu_capable())
    validate_instance_groups(config, gpus)
    versions = select_versions(config, source.path)
    version_dir = source.path / str(versions[-1])
    if completion.auto_complete:
        backend.autocomplete(config, version_dir, completion.options(backend.name))
        normalize(config)
    validate_io_config(config)
    BatchingPolicy.from_config(config)
    try:
        backend.validate(config, version_dir)
    except ConfigError as exc:
        if completion.auto_complete or (config.input and config.output):
            raise
        raise ConfigError(
            f"{exc}; with --disable-auto-complete-config the config must list every input and "
            "output"
        ) from None
    return config, backend, versions


def _refuse_unserved(config: model_config_pb2.ModelConfig) -> None:
    """Scheduling that would change what a model computes if it were silently ignored."""
    name = config.name
    if config.platform == "ensemble" or config.HasField("ensemble_scheduling"):
        raise ConfigError(f"model '{name}': ensembles are not served by bertserve")
    if config.HasField("sequence_batching"):
        raise ConfigError(
            f"model '{name}': sequence_batching (stateful models) is not served by bertserve; "
            "use dynamic_batching for stateless models"
        )
    if config.model_transaction_policy.decoupled:
        raise ConfigError(
            f"model '{name}': decoupled models (several responses per request) are not served "
            "by bertserve"
        )


def devices(config: model_config_pb2.ModelConfig) -> list[Device]:
    """One Device per instance: `count` on each listed GPU, or `count` on the CPU."""
    placed: list[Device] = []
    for group in config.instance_group:
        if group.kind == _GROUP.KIND_GPU:
            for gpu in group.gpus:
                placed.extend(Device("gpu", int(gpu)) for _ in range(group.count))
        else:
            placed.extend(Device("cpu") for _ in range(group.count))
    return placed


def create_instances(
    config: model_config_pb2.ModelConfig,
    backend: Backend,
    version_dir: Path,
    version: int,
    start_model: StartModel | None,
) -> list[ModelInstance]:
    if not version_dir.is_dir():
        raise ConfigError(f"version folder {version_dir} does not exist")
    context = LoadContext(model_name=config.name, version=version, start_model=start_model)
    if start_model is not None:
        context.call_model = lambda name, version, inputs: start_model(name, version, inputs)()
    instances: list[ModelInstance] = []
    try:
        for device in devices(config):
            instances.append(backend.load(config, version_dir, device, context))
    except BaseException:
        for instance in instances:
            instance.close()
        raise
    return instances


def warm_up(
    config: model_config_pb2.ModelConfig, instances: list[ModelInstance], model_dir: Path
) -> None:
    """Run each `model_warmup` sample `count` times on every instance before it serves."""
    rng = np.random.default_rng(0)
    outputs = [o.name for o in config.output]
    for sample in config.model_warmup:
        _check_warmup(config, sample)
        feed: dict[str, np.ndarray] = {}
        for name, spec in sample.inputs.items():
            datatype = config_type_to_datatype(model_config_pb2.DataType.Name(spec.data_type))
            dtype = datatype_to_numpy(datatype)
            shape = ((sample.batch_size,) if config.max_batch_size > 0 else ()) + tuple(
                int(d) for d in spec.dims
            )
            which = spec.WhichOneof("input_data_type")
            if which == "input_data_file":
                # Triton's place for warmup data; confined to the model's folder.
                path = confined_file(
                    spec.input_data_file,
                    model_dir / "warmup",
                    f"model_warmup '{sample.name}' input_data_file",
                )
                data = np.fromfile(path, dtype=dtype)
                if data.size != int(np.prod(shape)):
                    raise ConfigError(
                        f"model_warmup '{sample.name}': input_data_file "
                        f"'{spec.input_data_file}' holds {data.size} elements, "
                        f"the shape {list(shape)} needs {int(np.prod(shape))}"
                    )
                feed[name] = data.reshape(shape)
            elif which == "random_data" and dtype.kind in "iu":
                feed[name] = rng.integers(0, 2, size=shape).astype(dtype)
            elif which == "random_data" and dtype.kind == "f":
                feed[name] = rng.standard_normal(size=shape).astype(dtype)
            elif dtype.kind == "O":
                feed[name] = np.full(shape, b"warmup", dtype=object)
            else:
                feed[name] = np.zeros(shape, dtype=dtype)
        for instance in instances:
            for _ in range(max(sample.count, 1)):
                instance.run(feed, outputs)


#: Most bytes of input one warm-up sample may make, and most runs of it: a config (or a load
#: request's override) must not make a load allocate or run without bound.
MAX_WARMUP_BYTES = 64 * 1024 * 1024
MAX_WARMUP_COUNT = 1000


def _check_warmup(config: model_config_pb2.ModelConfig, sample: Any) -> None:
    what = f"model_warmup '{sample.name}'"
    if config.max_batch_size > 0 and sample.batch_size > config.max_batch_size:
        raise ConfigError(
            f"{what}: batch_size {sample.batch_size} exceeds max_batch_size {config.max_batch_size}"
        )
    if sample.count > MAX_WARMUP_COUNT:
        raise ConfigError(f"{what}: count {sample.count} is above {MAX_WARMUP_COUNT}")
    size = 0
    for name, spec in sample.inputs.items():
        if any(d < 0 for d in spec.dims):
            raise ConfigError(f"{what}: input '{name}' needs fixed dims, got {list(spec.dims)}")
        datatype = config_type_to_datatype(model_config_pb2.DataType.Name(spec.data_type))
        itemsize = datatype_to_numpy(datatype).itemsize if datatype != "BYTES" else 8
        size += max(sample.batch_size, 1) * math.prod(spec.dims) * itemsize
    if size > MAX_WARMUP_BYTES:
        raise ConfigError(
            f"{what}: its inputs come to {size} bytes, more than the {MAX_WARMUP_BYTES} a "
            "warm-up sample may take"
        )
