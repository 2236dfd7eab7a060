"""Turn a model folder into running instances: complete the config, place instances, warm up.

Everything here blocks (reads files, builds sessions); the engine calls it from a thread."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2

from bertserve.backends.base import Backend, Device, LoadContext, ModelInstance, backend_for_config
from bertserve.backends.parameters import confined_file
from bertserve.batching.policy import BatchingPolicy
from bertserve.errors import ConfigError
from bertserve.repository import ModelSource, select_versions
from bertserve.tensors import config_type_to_datatype, datatype_to_numpy

__all__ = [
    "complete_instance_groups",
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


def prepare_config(
    source: ModelSource,
    override: model_config_pb2.ModelConfig | None,
    strict: bool,
) -> tuple[model_config_pb2.ModelConfig, Backend, list[int]]:
    """The completed config, its backend and the versions to serve."""
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(override if override is not None else source.config)
    config.name = source.name
    backend = backend_for_config(config, source.path)
    versions = select_versions(config, source.path)
    if strict and (not config.input or not config.output):
        raise ConfigError(
            "--strict-model-config is on and the config does not list every input and output; "
            "list them or drop --strict-model-config to complete them from the model file"
        )
    backend.autocomplete(config, source.path / str(versions[-1]))
    BatchingPolicy.from_config(config)  # validates batching fields early
    complete_instance_groups(config, backend.name, visible_gpus())
    return config, backend, versions


def complete_instance_groups(
    config: model_config_pb2.ModelConfig, backend_name: str, gpus: list[int]
) -> None:
    """Resolve KIND_AUTO, default `gpus` to every visible GPU (count instances on each, as
    Triton does), and check the GPUs named exist."""
    if not config.instance_group:
        config.instance_group.add(kind=_GROUP.KIND_AUTO, count=1)
    for i, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{i}"
        if group.count < 1:
            group.count = 1
        if group.kind == _GROUP.KIND_AUTO:
            on_gpu = bool(gpus) and backend_name != "onnxruntime"
            group.kind = _GROUP.KIND_GPU if on_gpu else _GROUP.KIND_CPU
        if group.kind == _GROUP.KIND_GPU:
            if not gpus:
                raise ConfigError(
                    f"instance_group[{i}] asks for KIND_GPU but no CUDA GPU is visible to this "
                    "process; use KIND_CPU or run on a machine with a GPU"
                )
            if not group.gpus:
                group.gpus.extend(gpus)
            absent = [g for g in group.gpus if g not in gpus]
            if absent:
                raise ConfigError(
                    f"instance_group[{i}].gpus lists {absent}, not among the visible GPUs {gpus}"
                )
        elif group.kind not in (_GROUP.KIND_CPU, _GROUP.KIND_MODEL):
            raise ConfigError(
                f"instance_group[{i}].kind {_GROUP.Kind.Name(group.kind)} is not served here; "
                "use KIND_CPU, KIND_GPU or KIND_AUTO"
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
    call_model: Callable[[str, str, dict[str, np.ndarray]], dict[str, np.ndarray]] | None,
) -> list[ModelInstance]:
    if not version_dir.is_dir():
        raise ConfigError(f"version folder {version_dir} does not exist")
    context = LoadContext(model_name=config.name, version=version, call_model=call_model)
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
