"""What tritonserver fills into every config before a backend sees it, and after.

- `fill_backend_fields`: `backend`, `platform` and `default_model_filename` from each other or
  from the files of the first version folder (Triton does this even with
  `--disable-auto-complete-config`).
- `normalize`: `version_policy` (latest 1), a dynamic batcher's `preferred_batch_size`
  (max_batch_size), a sequence batcher's idle time, and the `optimization` pinned-memory
  defaults. Run before the backend completes the config and again after, as Triton does.
- `place_instance_groups`: a default group named like the model, KIND_AUTO resolved, names
  `<model>_<index>`, Triton's default count (2 on the CPU for onnxruntime, else 1), and every
  visible GPU for a KIND_GPU group that names none.

The completed config is what `/v2/models/<m>/config` answers, field for field as tritonserver
answers it for the same model."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from bertserve.errors import ConfigError

__all__ = [
    "ONNX_BACKEND",
    "ONNX_FILENAME",
    "ONNX_PLATFORM",
    "fill_backend_fields",
    "normalize",
    "place_instance_groups",
]

ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
ONNX_FILENAME = "model.onnx"

#: Triton's default idle time of a sequence (the sequence batcher is not served here, but the
#: config reads back as tritonserver completes it).
_SEQUENCE_IDLE_US = 1_000_000
#: Instances per CPU group when the config gives no count: backends opt in to 2.
_CPU_COUNT = {ONNX_BACKEND: 2, "tensorflow": 2}
_Group = pb.ModelInstanceGroup


def _first_version_files(model_dir: Path) -> set[str] | None:
    """Names in the first sub-folder (in name order, as Triton reads them), None without one."""
    folders = (
        sorted(p.name for p in model_dir.iterdir() if p.is_dir()) if model_dir.is_dir() else []
    )
    if not folders:
        return None
    return {p.name for p in (model_dir / folders[0]).iterdir()}


def fill_backend_fields(config: pb.ModelConfig, model_dir: Path) -> None:
    """`backend`, `platform`, `default_model_filename` (tritonserver's server-side autofill,
    limited to what this server serves: a config naming another backend keeps it, and is
    refused later with a sentence saying so)."""
    files = _first_version_files(model_dir)
    if not config.backend and (
        config.platform == ONNX_PLATFORM
        or config.default_model_filename == ONNX_FILENAME
        or (
            not config.platform
            and not config.default_model_filename
            and files is not None
            and ONNX_FILENAME in files
        )
    ):
        config.backend = ONNX_BACKEND
    if config.backend == ONNX_BACKEND:
        config.platform = config.platform or ONNX_PLATFORM
        config.default_model_filename = config.default_model_filename or ONNX_FILENAME
        return
    if not config.backend and not config.platform and not config.default_model_filename:
        # Triton's last resort: a model named `<name>.<backend>`.
        name = config.name
        if "." not in name:
            raise ConfigError(
                f"Invalid model name: Could not determine backend for model '{name}' with no "
                "backend in model configuration. Expected model name of the form "
                "'model.<backend_name>'.; for an ONNX model put model.onnx in a version folder "
                f'({name}/1/model.onnx) or set platform: "{ONNX_PLATFORM}"'
            )
        backend = name.split(".", 1)[1]
        config.backend = backend
        config.default_model_filename = f"model.{backend}"


def normalize(config: pb.ModelConfig) -> None:
    """tritonserver's NormalizeModelConfig."""
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if (
        config.HasField("dynamic_batching")
        and not config.dynamic_batching.preferred_batch_size
        and config.max_batch_size > 0
    ):
        config.dynamic_batching.preferred_batch_size.append(config.max_batch_size)
    if config.HasField("sequence_batching"):
        sequence = config.sequence_batching
        if sequence.max_sequence_idle_microseconds == 0:
            sequence.max_sequence_idle_microseconds = _SEQUENCE_IDLE_US
        if (
            sequence.HasField("oldest")
            and not sequence.oldest.preferred_batch_size
            and config.max_batch_size > 0
        ):
            sequence.oldest.preferred_batch_size.append(config.max_batch_size)
    if not config.HasField("ensemble_scheduling"):
        optimization = config.optimization
        if not optimization.HasField("input_pinned_memory"):
            optimization.input_pinned_memory.enable = True
        if not optimization.HasField("output_pinned_memory"):
            optimization.output_pinned_memory.enable = True


def place_instance_groups(config: pb.ModelConfig, gpus: list[int], gpu_capable: bool) -> None:
    """tritonserver's NormalizeInstanceGroup. `gpus`: the GPU ids this process may use;
    `gpu_capable`: whether the model's backend can run on them (KIND_AUTO becomes KIND_GPU
    only then: the onnxruntime package without CUDA runs on the CPU whatever the machine)."""
    if config.HasField("ensemble_scheduling"):
        return
    usable = gpus if gpu_capable else []
    if not config.instance_group:
        config.instance_group.add(name=config.name, kind=_Group.KIND_AUTO)
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.kind == _Group.KIND_AUTO:
            on_gpu = bool(usable) and all(g in usable for g in group.gpus)
            group.kind = _Group.KIND_GPU if on_gpu else _Group.KIND_CPU
        if group.count < 1:
            cpu = group.kind == _Group.KIND_CPU
            group.count = _CPU_COUNT.get(config.backend, 1) if cpu else 1
        if group.kind == _Group.KIND_GPU and not group.gpus:
            group.gpus.extend(usable if usable else gpus)
