"""Config checks that need no model file, in Triton's order and with Triton's words.

tritonserver checks a config before it looks at any version folder: the model-wide fields
(`validate_model_config`), then, once inputs and outputs are known (written, or completed from
the model file), each tensor's dims and reshape and the batch inputs/outputs
(`validate_io_config`), and the instance groups once they are placed
(`validate_instance_groups`). Each message is tritonserver's, so scripts that look for it find
it; where a hint helps, it follows Triton's sentence after a semicolon."""

from __future__ import annotations

import math

from tritonclient.grpc import model_config_pb2 as pb

from bertserve.errors import ConfigError

__all__ = [
    "BACKEND_OF_PLATFORM",
    "validate_model_config",
    "validate_io_config",
    "validate_instance_groups",
]

#: Platforms tritonserver knows, and the backend each one belongs to.
BACKEND_OF_PLATFORM = {
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "tensorrt_plan": "tensorrt",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "torch_aoti": "pytorch",
}
_KNOWN_BACKENDS = {"tensorflow", "tensorrt", "onnxruntime", "pytorch"}
_ENSEMBLE = "ensemble"
_WILDCARD = -1
_Control = pb.ModelSequenceBatching.Control
_BOOLEAN_CONTROLS = (
    _Control.CONTROL_SEQUENCE_START,
    _Control.CONTROL_SEQUENCE_END,
    _Control.CONTROL_SEQUENCE_READY,
)
_CORRID_TYPES = {pb.TYPE_UINT64, pb.TYPE_INT64, pb.TYPE_UINT32, pb.TYPE_INT32, pb.TYPE_STRING}
_Group = pb.ModelInstanceGroup


def validate_model_config(config: pb.ModelConfig) -> None:
    """The model-wide fields (tritonserver's ValidateModelConfig)."""
    name = config.name
    if not name:
        raise ConfigError("model configuration must specify 'name'")
    if not config.backend and config.platform != _ENSEMBLE:
        raise ConfigError(
            f"unexpected platform type '{config.platform}' for {name}; set 'backend' "
            "(onnxruntime) or a platform this server knows (onnxruntime_onnx)"
        )
    if config.backend and config.platform == _ENSEMBLE:
        raise ConfigError(
            f"Ensemble model '{name}' must have platform type '{config.platform}' and empty "
            "backend type"
        )
    if config.backend in _KNOWN_BACKENDS and (
        BACKEND_OF_PLATFORM.get(config.platform) != config.backend
    ):
        raise ConfigError(
            f"unexpected 'platform' and 'backend' pair, got:{config.platform}, {config.backend}"
        )
    if config.max_batch_size < 0:
        raise ConfigError(f"'max_batch_size' must be non-negative value for {name}")
    if not config.HasField("version_policy"):
        raise ConfigError(f"must specify 'version policy' for {name}")
    if config.HasField("dynamic_batching"):
        _validate_dynamic_batching(config)
    if config.HasField("sequence_batching"):
        _validate_sequence_batching(config)
    if config.HasField("ensemble_scheduling"):
        if config.platform != _ENSEMBLE:
            raise ConfigError(
                f"ensemble scheduling cannot be set for model '{name}' whose platform is not "
                f"{_ENSEMBLE}"
            )
    elif config.platform == _ENSEMBLE:
        raise ConfigError(
            f"ensemble scheduling must be set for ensemble {name} whose platform is {_ENSEMBLE}"
        )
    if config.model_transaction_policy.decoupled and config.response_cache.enable:
        raise ConfigError(
            f"Response Cache does not currently support model {name} with 'decoupled' "
            "transaction policy. Please disable the response cache."
        )


def _validate_dynamic_batching(config: pb.ModelConfig) -> None:
    name, batching = config.name, config.dynamic_batching
    for size in batching.preferred_batch_size:
        if size <= 0:
            raise ConfigError(f"dynamic batching preferred size must be positive for {name}")
        if size > config.max_batch_size:
            raise ConfigError(
                f"dynamic batching preferred size must be <= max batch size for {name}"
            )
    levels = batching.priority_levels
    if levels != 0:
        if batching.default_priority_level == 0 or batching.default_priority_level > levels:
            raise ConfigError(f"default priority level must be in range [1, {levels}] for {name}")
        for level in batching.priority_queue_policy:
            if level == 0 or level > levels:
                raise ConfigError(
                    "priority queue policy must have priority level in range "
                    f"[1, {levels}] for {name}"
                )
    if batching.preserve_ordering:
        if levels > 1:
            raise ConfigError(
                f"Only one priority level is allowed when 'preserve_ordering' is true for {name}"
            )
        policies = [batching.default_queue_policy, *batching.priority_queue_policy.values()]
        for policy in policies:
            if policy.default_timeout_microseconds and (
                policy.timeout_action == pb.ModelQueuePolicy.DELAY
            ):
                raise ConfigError(
                    "Queue policy can not have DELAY as timeout action when "
                    f"'preserve_ordering' is true for {name}"
                )


def _validate_sequence_batching(config: pb.ModelConfig) -> None:
    name, batcher = config.name, config.sequence_batching
    if config.response_cache.enable:
        raise ConfigError(
            f"Response Cache does not currently support model {name} with sequence batching "
            "scheduler. Please disable the response cache."
        )
    for kind in _BOOLEAN_CONTROLS:
        _control(batcher, name, kind, boolean=True)
    corrid = _control(batcher, name, _Control.CONTROL_SEQUENCE_CORRID, boolean=False)
    if corrid is not None and corrid.data_type not in _CORRID_TYPES:
        raise ConfigError(
            f"unexpected data type for control CONTROL_SEQUENCE_CORRID for {name}. Allowed "
            "data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"
        )
    if batcher.HasField("oldest"):
        for size in batcher.oldest.preferred_batch_size:
            if size <= 0:
                raise ConfigError(
                    f"sequence batching preferred batch size must be positive for {name}"
                )
            if size > config.max_batch_size:
                raise ConfigError(
                    f"sequence batching preferred batch size must be <= max batch size for {name}"
                )
    if batcher.HasField("direct"):
        utilization = batcher.direct.minimum_slot_utilization
        if utilization < 0.0 or utilization > 1.0:
            raise ConfigError(
                f"sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}"
            )


def _control(
    batcher: pb.ModelSequenceBatching, name: str, kind: int, boolean: bool
) -> pb.ModelSequenceBatching.Control | None:
    """The control of `kind`, checked as tritonserver checks it (None when absent)."""
    kind_name = _Control.Kind.Name(kind)
    seen_tensors: set[str] = set()
    found = None
    for control_input in batcher.control_input:
        if not control_input.name:
            raise ConfigError(f"sequence batching control tensor must have a name for {name}")
        if control_input.name in seen_tensors:
            raise ConfigError(
                f"sequence batching control tensor '{control_input.name}' is specified for "
                f"multiple control kinds for {name}"
            )
        seen_tensors.add(control_input.name)
        for control in control_input.control:
            if control.kind != kind:
                continue
            if found is not None:
                raise ConfigError(
                    f"sequence batching specifies multiple {kind_name} tensors for {name}"
                )
            found = control
            given = [
                field
                for field in ("int32_false_true", "fp32_false_true", "bool_false_true")
                if len(getattr(control, field))
            ]
            if not boolean:
                if given:
                    raise ConfigError(
                        "sequence batching must not specify either 'int32_false_true', "
                        f"'fp32_false_true' or 'bool_false_true' for {kind_name} for {name}"
                    )
                continue
            if not given:
                raise ConfigError(
                    "sequence batching must specify either 'int32_false_true', "
                    f"'fp32_false_true' or 'bool_false_true' for {kind_name} for {name}"
                )
            if len(given) > 1:
                raise ConfigError(
                    "sequence batching specifies more than one from 'int32_false_true', "
                    f"'fp32_false_true' and 'bool_false_true' for {kind_name} for {name}"
                )
            if len(getattr(control, given[0])) != 2:
                raise ConfigError(
                    f"sequence batching control '{given[0]}' must have exactly 2 entries for "
                    f"{kind_name} for {name}"
                )
    return found


def validate_io_config(config: pb.ModelConfig) -> None:
    """Each input's and output's dims and reshape, and the batch inputs/outputs (tritonserver's
    ValidateModelIOConfig)."""
    try:
        for tensor in config.input:
            _validate_tensor(tensor, config, "model input ")
            if tensor.format in (pb.ModelInput.FORMAT_NHWC, pb.ModelInput.FORMAT_NCHW) and (
                len(tensor.dims) != 3
            ):
                raise ConfigError("model input NHWC/NCHW require 3 dims")
        for tensor in config.output:
            _validate_tensor(tensor, config, "model output ")
        _validate_batch_io(config)
    except ConfigError as exc:
        raise ConfigError(f"{exc} for {config.name}") from None


def _validate_tensor(
    tensor: pb.ModelInput | pb.ModelOutput, config: pb.ModelConfig, prefix: str
) -> None:
    if not tensor.name:
        raise ConfigError(prefix + "must specify 'name'")
    prefix += f"'{tensor.name}' "
    if tensor.data_type == pb.TYPE_INVALID:
        raise ConfigError(prefix + "must specify 'data_type'")
    if not tensor.dims:
        raise ConfigError(prefix + "must specify 'dims'")
    has_reshape = tensor.HasField("reshape")
    reshape = list(tensor.reshape.shape)
    if has_reshape and not reshape and config.max_batch_size == 0:
        raise ConfigError(
            prefix + "cannot have empty reshape for non-batching model as scalar tensors are "
            "not supported"
        )
    if any(d < 1 and d != _WILDCARD for d in tensor.dims):
        raise ConfigError(
            prefix + "dimension must be integer >= 1, or -1 to indicate a variable-size dimension"
        )
    if has_reshape:
        if any(d < 1 and d != _WILDCARD for d in reshape):
            raise ConfigError(
                prefix + "reshape dimensions must be integer >= 1, or -1 to indicate a "
                "variable-size dimension"
            )
        dims_count, reshape_count = _element_count(tensor.dims), _element_count(reshape)
        if dims_count != reshape_count and (reshape_count != 0 or dims_count != 1):
            raise ConfigError(prefix + "has different size for dims and reshape")
        if dims_count == _WILDCARD:
            # Between the variable-size dimensions, each stretch must hold as many elements.
            dims_runs, reshape_runs = _runs(tensor.dims), _runs(reshape)
            if len(dims_runs) != len(reshape_runs):
                raise ConfigError(
                    prefix + "has different number of variable-size dimensions for dims and reshape"
                )
            if dims_runs != reshape_runs:
                raise ConfigError(prefix + "has different size for dims and reshape")
    if tensor.is_shape_tensor and config.platform != "tensorrt_plan":
        raise ConfigError("shape tensors are only supported for TensorRT platform")
    if tensor.is_non_linear_format_io and config.platform != "tensorrt_plan":
        raise ConfigError("Non-linear IO format is only supported for the TensorRT platform")


def _element_count(dims: object) -> int:
    """Triton's GetElementCount: -1 when any dimension is variable, 0 for no dimensions."""
    values = list(dims)  # type: ignore[call-overload]
    if not values:
        return 0
    if _WILDCARD in values:
        return _WILDCARD
    return math.prod(values)


def _runs(dims: object) -> list[int]:
    """Element counts of the stretches between variable-size dimensions."""
    runs, current = [], 1
    for d in dims:  # type: ignore[attr-defined]
        if d == _WILDCARD:
            runs.append(current)
            current = 1
        else:
            current *= d
    runs.append(current)
    return runs


def _validate_batch_io(config: pb.ModelConfig) -> None:
    inputs = {t.name for t in config.input}
    outputs = {t.name for t in config.output}
    for batch_input in config.batch_input:
        kind = pb.BatchInput.Kind.Name(batch_input.kind)
        if len(batch_input.source_input) != 1:
            raise ConfigError(
                f"batch input kind '{kind}' expects 1 source input, got "
                f"{len(batch_input.source_input)}"
            )
        if batch_input.data_type not in (pb.TYPE_INT32, pb.TYPE_FP32):
            raise ConfigError("batch input data type must be TYPE_INT32 or TYPE_FP32")
        for source in batch_input.source_input:
            if source not in inputs:
                raise ConfigError(f"unknown source input name '{source}'")
    for batch_output in config.batch_output:
        kind = pb.BatchOutput.Kind.Name(batch_output.kind)
        if len(batch_output.source_input) != 1:
            raise ConfigError(
                f"batch output kind '{kind}' expects 1 source input, got "
                f"{len(batch_output.source_input)}"
            )
        for source in batch_output.source_input:
            if source not in inputs:
                raise ConfigError(f"unknown source input name '{source}'")
        targets: set[str] = set()
        for target in batch_output.target_name:
            if target not in outputs:
                raise ConfigError(f"unknown target output name '{target}'")
            if target in targets:
                raise ConfigError(f"target output name '{target}' can only be specified once")
            targets.add(target)


def validate_instance_groups(config: pb.ModelConfig, gpus: list[int]) -> None:
    """Placed instance groups (tritonserver's ValidateInstanceGroup); `gpus` are the GPU ids
    this process may use."""
    if config.HasField("ensemble_scheduling"):
        return
    name = config.name
    if not config.instance_group:
        raise ConfigError(f"must specify one or more 'instance group's for {name}")
    for group in config.instance_group:
        where = f"instance group {group.name} of model {name}"
        if group.kind == _Group.KIND_MODEL:
            if group.gpus:
                raise ConfigError(f"{where} has kind KIND_MODEL but specifies one or more GPUs")
        elif group.kind == _Group.KIND_GPU:
            if not group.gpus:
                if not gpus:
                    raise ConfigError(
                        f"{where} has kind KIND_GPU but no GPUs are available; use KIND_CPU "
                        "or run on a machine with a CUDA GPU"
                    )
                raise ConfigError(f"{where} has kind KIND_GPU but specifies no GPUs")
            for gpu in group.gpus:
                if gpu not in gpus:
                    raise ConfigError(
                        f"{where} specifies invalid or unsupported gpu id {gpu}. GPUs with at "
                        "least the minimum required CUDA compute compatibility of 0.000000 are: "
                        + ", ".join(map(str, gpus))
                    )
        elif group.kind == _Group.KIND_CPU:
            if group.gpus:
                raise ConfigError(f"{where} has kind KIND_CPU but specifies one or more GPUs")
        else:
            raise ConfigError(f"{where} has unexpected kind KIND_AUTO")
        if group.profile and config.platform != "tensorrt_plan":
            raise ConfigError(
                f"{where} and platform {config.platform}specifies profile field which is only "
                "supported for TensorRT models"
            )
