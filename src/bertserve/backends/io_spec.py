"""A config's inputs and outputs against what the model file declares, as Triton's ONNX Runtime
backend does it: `autocomplete_io` fills what the config leaves out (max_batch_size, a dynamic
batcher, inputs, outputs), `check_io` checks the result against the model file. Messages are
the backend's own words, so scripts written for tritonserver find them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError
from bertserve.tensors import config_type_to_datatype, datatype_to_config_type

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "TensorSpec",
    "autocomplete_io",
    "check_io",
    "default_max_batch_size",
    "shape_text",
]

log = logging.getLogger("bertserve.backends")

#: tritonserver's `--backend-config=default-max-batch-size` when none is given.
DEFAULT_MAX_BATCH_SIZE = 4


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model file's tensor: name, KServe datatype, full dims (batch axis included), -1 dynamic."""

    name: str
    datatype: str
    dims: tuple[int, ...]


def default_max_batch_size(options: Mapping[str, str] | None) -> int:
    """`--backend-config=<backend>,default-max-batch-size=N` (or the global setting)."""
    text = (options or {}).get("default-max-batch-size")
    if text is None:
        return DEFAULT_MAX_BATCH_SIZE
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"--backend-config default-max-batch-size must be an integer, got '{text}'"
        ) from None


def shape_text(dims: Iterable[int]) -> str:
    """Triton's way of printing a shape: `[-1,16]`."""
    return "[" + ",".join(str(int(d)) for d in dims) + "]"


def autocomplete_io(
    config: model_config_pb2.ModelConfig,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> None:
    """Complete a config that lists no inputs or no outputs; one that lists both is left as
    written (Triton skips auto-complete entirely then, max_batch_size included)."""
    if (config.input or config.batch_input) and config.output:
        return
    can_batch = all(spec.dims and spec.dims[0] == -1 for spec in (*inputs, *outputs))
    if can_batch:
        if config.max_batch_size == 0:
            config.max_batch_size = max(default_max_batch_size, 0)
            log.warning(
                "autofilled max_batch_size to %d for model '%s' since batching is supported but "
                "no max_batch_size is specified in model configuration",
                config.max_batch_size,
                config.name,
            )
        if (
            config.max_batch_size > 1
            and not config.HasField("dynamic_batching")
            and not config.HasField("sequence_batching")
        ):
            config.dynamic_batching.SetInParent()
    elif config.max_batch_size != 0:
        raise ConfigError(
            f"autofill failed for model '{config.name}': model does not support batching while "
            "non-zero max_batch_size is specified; set max_batch_size: 0, or export the model "
            "with a dynamic first (batch) axis on every input and output"
        )
    if not config.input:
        _fill(config.input, inputs, config.max_batch_size)
    if not config.output:
        _fill(config.output, outputs, config.max_batch_size)


def _fill(entries: object, specs: Sequence[TensorSpec], max_batch_size: int) -> None:
    for spec in specs:
        entry = entries.add()  # type: ignore[attr-defined]
        entry.name = spec.name
        entry.data_type = model_config_pb2.DataType.Value(datatype_to_config_type(spec.datatype))
        dims = spec.dims[1:] if max_batch_size > 0 else spec.dims
        if dims:
            entry.dims.extend(dims)
        else:
            # A scalar (per batch item) reads as [1]; with batching the model gets [batch].
            entry.dims.append(1)
            if max_batch_size > 0:
                entry.reshape.SetInParent()


def check_io(
    config: model_config_pb2.ModelConfig,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> None:
    """The config's inputs and outputs against the model file's."""
    name = config.name
    expected = len(config.input) + len(config.batch_input)
    if len(inputs) != expected:
        raise ConfigError(
            f"unable to load model '{name}', configuration expects {expected} inputs, model "
            f"provides {len(inputs)}"
        )
    _check_section(config, config.input, inputs, "input", exact=False)
    _check_section(config, config.output, outputs, "output", exact=True)


def _check_section(
    config: model_config_pb2.ModelConfig,
    entries: Iterable[model_config_pb2.ModelInput | model_config_pb2.ModelOutput],
    specs: Sequence[TensorSpec],
    kind: str,
    exact: bool,
) -> None:
    name = config.name
    by_name = {spec.name: spec for spec in specs}
    batch_outputs = {t for b in config.batch_output for t in b.target_name}
    for entry in entries:
        if kind == "input" and entry.optional and config.max_batch_size != 0:
            raise ConfigError(
                f"unable to load model '{name}', optional input '{entry.name}' is not supported "
                "for models that support batching"
            )
        spec = by_name.get(entry.name)
        if spec is None:
            raise ConfigError(
                f"unexpected inference {kind} '{entry.name}', allowed {kind}s are: "
                + ", ".join(sorted(by_name))
            )
        config_type = model_config_pb2.DataType.Name(entry.data_type)
        if config_type_to_datatype(config_type) != spec.datatype:
            raise ConfigError(
                f"unable to load model '{name}', configuration expects datatype {config_type} "
                f"for {kind} '{entry.name}', model provides "
                f"{datatype_to_config_type(spec.datatype)}"
            )
        if entry.name in batch_outputs:
            continue
        dims = list(entry.reshape.shape) if entry.HasField("reshape") else list(entry.dims)
        if spec.dims:
            _compare_dims(name, entry.name, spec.dims, dims, config.max_batch_size, exact)
        elif any(d != 1 for d in dims):
            raise ConfigError(
                f"unable to load model '{name}', scalar tensor '{entry.name}', should only "
                "provide 1 in the model configuration when the model doesn't support batching. "
                f"Model configuration provided: {shape_text(dims)}."
            )


def _compare_dims(
    model: str,
    tensor: str,
    model_dims: tuple[int, ...],
    dims: list[int],
    max_batch_size: int,
    exact: bool,
) -> None:
    where = f"model '{model}', tensor '{tensor}'"
    if max_batch_size > 0:
        if not model_dims or model_dims[0] != -1:
            raise ConfigError(
                f"{where}: for the model to support batching the shape should have at least 1 "
                "dimension and the first dimension must be -1; but shape expected by the model "
                f"is {shape_text(model_dims)}"
            )
        full = [-1, *dims]
        described = (
            "dimensions (an initial batch dimension because max_batch_size > 0 followed by the "
            f"explicit tensor shape, making complete shape {shape_text(full)})"
        )
    else:
        full = dims
        described = f"dimensions (shape {shape_text(full)})"
    matches = len(model_dims) == len(full) and all(
        m == f for m, f in zip(model_dims, full, strict=True) if exact or m != -1
    )
    if not matches:
        raise ConfigError(
            f"{where}: the model expects {len(model_dims)} dimensions (shape "
            f"{shape_text(model_dims)}) but the model configuration specifies {len(full)} "
            f"{described}"
        )
