"""Complete a config's inputs/outputs from what the model file declares, and check the ones
written against it (Triton's auto-complete)."""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError
from bertserve.tensors import config_type_to_datatype, datatype_to_config_type

__all__ = ["TensorSpec", "complete_io"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model file's tensor: name, KServe datatype, full dims (batch axis included), -1 dynamic."""

    name: str
    datatype: str
    dims: tuple[int, ...]


def complete_io(
    config: model_config_pb2.ModelConfig,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    source: str,
) -> None:
    batching = config.max_batch_size > 0
    if batching:
        for spec in (*inputs, *outputs):
            if not spec.dims or spec.dims[0] not in (-1,):
                raise ConfigError(
                    f"max_batch_size is {config.max_batch_size} but tensor '{spec.name}' of "
                    f"{source} has no dynamic first (batch) axis: set max_batch_size: 0 or "
                    "export the model with a dynamic batch axis"
                )
    _complete(config.input, inputs, "input", batching, source)
    _complete(config.output, outputs, "output", batching, source)


def _complete(
    entries: object,
    specs: list[TensorSpec],
    kind: str,
    batching: bool,
    source: str,
) -> None:
    by_name = {s.name: s for s in specs}
    repeated = entries  # RepeatedCompositeFieldContainer of ModelInput / ModelOutput
    written = list(repeated)  # type: ignore[call-overload]
    if not written:
        for spec in specs:
            entry = repeated.add()  # type: ignore[attr-defined]
            entry.name = spec.name
            entry.data_type = model_config_pb2.DataType.Value(
                datatype_to_config_type(spec.datatype)
            )
            entry.dims.extend(spec.dims[1:] if batching else spec.dims)
        return
    for i, entry in enumerate(written):
        where = f"{kind}[{i}] '{entry.name}'"
        found = by_name.get(entry.name)
        if found is None:
            raise ConfigError(
                f"config {where} is not a {kind} of {source}, whose {kind}s are "
                f"{', '.join(by_name) or 'none'}"
            )
        spec = found
        config_datatype = config_type_to_datatype(model_config_pb2.DataType.Name(entry.data_type))
        if entry.data_type == model_config_pb2.TYPE_INVALID:
            entry.data_type = model_config_pb2.DataType.Value(
                datatype_to_config_type(spec.datatype)
            )
        elif config_datatype != spec.datatype:
            raise ConfigError(
                f"config {where}: data_type is {model_config_pb2.DataType.Name(entry.data_type)} "
                f"but {source} declares {datatype_to_config_type(spec.datatype)}"
            )
        model_dims = spec.dims[1:] if batching else spec.dims
        config_dims = tuple(entry.reshape.shape) if entry.HasField("reshape") else tuple(entry.dims)
        if not entry.dims and not entry.HasField("reshape"):
            entry.dims.extend(model_dims)
        elif not entry.HasField("reshape") and not _dims_compatible(config_dims, model_dims):
            raise ConfigError(
                f"config {where}: dims {list(config_dims)} do not match {source}'s "
                f"{list(model_dims)} (batch axis excluded when max_batch_size > 0)"
            )
    names = {e.name for e in written}
    if kind == "input":
        missing = [s.name for s in specs if s.name not in names]
        if missing:
            raise ConfigError(
                f"config lists inputs {sorted(names)} but {source} also needs "
                f"{missing}: list every input or none"
            )


def _dims_compatible(config_dims: tuple[int, ...], model_dims: tuple[int, ...]) -> bool:
    if len(config_dims) != len(model_dims):
        return False
    return all(m == -1 or c == m for c, m in zip(config_dims, model_dims, strict=True))
