"""Check a request against its model's completed config: the one place every front end's
requests pass, so HTTP and gRPC fail with the same messages.

The checks run in tritonserver's order and answer with its words (clients and scripts match
them), bertserve's hint after a semicolon where one helps. tritonserver prefixes most of them
with `[request id: <id>] `; so does this module."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError, InvalidInput
from bertserve.messages import InferInput, InferRequest, RequestedOutput
from bertserve.tensors import config_type_to_datatype, datatype_to_numpy

__all__ = ["TensorSignature", "Signature", "TokenRanges", "request_prefix"]

#: BERT's token inputs, by the names the builder exports and every BERT engine here takes.
INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS = "input_ids", "attention_mask", "token_type_ids"


@dataclass(frozen=True, slots=True)
class TensorSignature:
    name: str
    datatype: str
    dims: tuple[int, ...]  # without the batch axis
    optional: bool = False
    reshape: tuple[int, ...] | None = None


def request_prefix(request: InferRequest) -> str:
    return f"[request id: {request.id or '<id_unknown>'}] "


def _shape_text(dims: tuple[int, ...] | list[int]) -> str:
    return "[" + ",".join(str(int(d)) for d in dims) + "]"


def _tensor(entry: model_config_pb2.ModelInput | model_config_pb2.ModelOutput) -> TensorSignature:
    return TensorSignature(
        entry.name,
        config_type_to_datatype(model_config_pb2.DataType.Name(entry.data_type)),
        tuple(entry.dims),
        getattr(entry, "optional", False),
        tuple(entry.reshape.shape) if entry.HasField("reshape") else None,
    )


class Signature:
    """A model version's inputs and outputs, ready for fast request checks."""

    def __init__(self, config: model_config_pb2.ModelConfig) -> None:
        self.model = config.name
        self.max_batch_size = config.max_batch_size
        self.inputs = {i.name: _tensor(i) for i in config.input}
        self.outputs = {o.name: _tensor(o) for o in config.output}
        self.required = [name for name, sig in self.inputs.items() if not sig.optional]
        self.output_names = list(self.outputs)
        self.tokens = TokenRanges.from_config(config)

    # -- inputs ------------------------------------------------------------------------------

    def check_inputs(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        """Return the model's feed (name -> array, reshaped where configured) and the batch size.
        Inputs in shared memory must have been read in already."""
        prefix = request_prefix(request)
        if request.raw:
            self._deduce_raw_input(request, prefix)
        seen: set[str] = set()
        for tensor in request.inputs:
            if tensor.name in seen:
                raise InvalidInput(f"{prefix}input '{tensor.name}' already exists in request")
            seen.add(tensor.name)
        self._check_input_count(request, prefix)
        batching = self.max_batch_size > 0
        batch = 0
        for tensor in request.inputs:
            if tensor.name not in self.inputs:
                raise InvalidInput(
                    f"unexpected inference input '{tensor.name}' for model '{self.model}'; it "
                    f"takes {', '.join(self.inputs)}"
                )
            if not batching:
                continue
            if not tensor.shape:
                raise InvalidInput(
                    f"{prefix}input '{tensor.name}' has no shape but model requires batch "
                    f"dimension for '{self.model}'"
                )
            if batch and tensor.shape[0] != batch:
                raise InvalidInput(
                    f"{prefix}input '{tensor.name}' batch size does not match other inputs for "
                    f"'{self.model}'"
                )
            batch = tensor.shape[0]
        if batching and batch > self.max_batch_size:
            raise InvalidInput(
                f"{prefix}inference request batch-size must be <= {self.max_batch_size} for "
                f"'{self.model}'; split the request"
            )
        if batching and request.inputs and batch < 1:
            raise InvalidInput(
                f"{prefix}inference request batch-size must be >= 1 for '{self.model}'"
            )
        feed = {t.name: self._check_input(t, batching, batch, prefix) for t in request.inputs}
        if self.tokens is not None:
            self.tokens.check(feed, self.model)
        return feed, (batch if batching else 1)

    def _check_input_count(self, request: InferRequest, prefix: str) -> None:
        given = [t.name for t in request.inputs]
        if len(self.required) <= len(given) <= len(self.inputs):
            return
        missing = [n for n in self.required if n not in given]
        got = "[" + ",".join(f"'{n}'" for n in given) + "]"
        wanted = "[" + ",".join(f"'{n}'" for n in missing) + "]"
        if len(self.required) == len(self.inputs):
            expected = f"expected {len(self.inputs)} inputs"
        else:
            expected = (
                f"expected number of inputs between {len(self.required)} and {len(self.inputs)}"
            )
        raise InvalidInput(
            f"{prefix}{expected} but got {len(given)} inputs for model '{self.model}'. Got "
            f"input(s) {got}, but missing required input(s) {wanted}. Please provide all "
            "required input(s)."
        )

    def _check_input(
        self, tensor: InferInput, batching: bool, batch: int, prefix: str
    ) -> np.ndarray:
        sig = self.inputs[tensor.name]
        if tensor.datatype != sig.datatype:
            raise InvalidInput(
                f"{prefix}inference input '{tensor.name}' data-type is '{tensor.datatype}', but "
                f"model '{self.model}' expects '{sig.datatype}'"
            )
        shape = tuple(tensor.shape)
        item_shape = shape[1:] if batching else shape
        if len(item_shape) != len(sig.dims) or any(
            item_shape[i] != d for i, d in _fixed_dims(sig.dims)
        ):
            full = ([-1] if batching else []) + list(sig.dims)
            note = (
                " NOTE: Setting a non-zero max_batch_size in the model config requires a batch "
                "dimension to be prepended to each input shape. If you want to specify the full "
                "shape including the batch dim in your input dims config, try setting "
                "max_batch_size to zero. See the model configuration docs for more info on "
                "max_batch_size."
                if batching
                else ""
            )
            raise InvalidInput(
                f"{prefix}unexpected shape for input '{tensor.name}' for model '{self.model}'. "
                f"Expected {_shape_text(full)}, got {_shape_text(shape)}.{note}"
            )
        if sig.reshape is not None:
            variable = iter(s for s, d in zip(item_shape, sig.dims, strict=True) if d == -1)
            reshaped = tuple(next(variable) if d == -1 else d for d in sig.reshape)
            shape = ((batch,) if batching else ()) + reshaped
        count = math.prod(shape)
        data = tensor.data
        if sig.datatype == "BYTES":
            if data.size > count:
                raise InvalidInput(
                    f"{prefix}unexpected number of string elements {count + 1} for inference "
                    f"input '{tensor.name}' for model '{self.model}', expecting {count}"
                )
            if data.size < count:
                raise InvalidInput(
                    f"{prefix}expected {count} string elements for inference input "
                    f"'{tensor.name}' for model '{self.model}', got {data.size}"
                )
        else:
            expected = count * datatype_to_numpy(sig.datatype).itemsize
            if data.nbytes != expected:
                raise InvalidInput(
                    f"{prefix}input byte size mismatch for input '{tensor.name}' for model "
                    f"'{self.model}'. Expected {expected}, got {data.nbytes}"
                )
            if data.dtype != datatype_to_numpy(sig.datatype):
                data = data.view(datatype_to_numpy(sig.datatype))
        return data.reshape(shape)

    def _deduce_raw_input(self, request: InferRequest, prefix: str) -> None:
        """Name and shape the raw body of an `Inference-Header-Content-Length: 0` request."""
        if len(self.inputs) != 1:
            raise InvalidInput(
                f"{prefix}Raw request must only have 1 input (found 1) to be deduced but got "
                f"{len(self.inputs)} inputs in '{self.model}' model configuration"
            )
        sig = next(iter(self.inputs.values()))
        body = request.inputs[0].data
        shape: list[int] = [1] if self.max_batch_size > 0 else []
        variable = -1
        count = 1
        for d in sig.dims:
            if d == -1:
                if variable != -1:
                    raise InvalidInput(
                        f"{prefix}The shape of the raw input '{sig.name}' can not be deduced "
                        "because there are more than one variable-sized dimension"
                    )
                variable = len(shape)
            else:
                count *= d
            shape.append(d)
        if sig.datatype == "BYTES":
            if variable != -1 or count != 1:
                raise InvalidInput(
                    f"{prefix}For BYTE datatype raw input '{sig.name}', the model must have "
                    "input shape [1]"
                )
            data = np.empty(1, dtype=np.object_)
            data[0] = body.tobytes()
        else:
            itemsize = datatype_to_numpy(sig.datatype).itemsize
            if variable != -1:
                shape[variable] = body.nbytes // (count * itemsize) if count else 0
            data = body
        request.inputs[0] = InferInput(sig.name, sig.datatype, tuple(shape), data)

    # -- outputs -----------------------------------------------------------------------------

    def check_outputs(self, request: InferRequest) -> list[str]:
        requested: list[RequestedOutput] | None = request.outputs
        if not requested:
            return self.output_names
        names: list[str] = []
        for out in requested:
            if out.name in names:
                raise InvalidInput(
                    f"{request_prefix(request)}output '{out.name}' already exists in request"
                )
            names.append(out.name)
        for name in names:
            if name not in self.outputs:
                raise InvalidInput(
                    f"unexpected inference output '{name}' for model '{self.model}'; it "
                    f"produces {', '.join(self.outputs)}"
                )
        return names

    def shape_outputs(
        self, results: Mapping[str, np.ndarray], batching: bool
    ) -> dict[str, np.ndarray]:
        """The model's outputs in the shapes the config gives (`reshape` undone, as Triton
        does: the config's `dims`, with the variable sizes the model produced)."""
        shaped = {}
        for name, array in results.items():
            sig = self.outputs.get(name)
            if sig is None or sig.reshape is None:
                shaped[name] = array
                continue
            lead = array.shape[:1] if batching else ()
            item = array.shape[1:] if batching else array.shape
            variable = iter(s for s, d in zip(item, sig.reshape, strict=False) if d == -1)
            dims = tuple(next(variable, 1) if d == -1 else d for d in sig.dims)
            shaped[name] = array.reshape(lead + dims)
        return shaped


@functools.cache
def _fixed_dims(dims: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(axis, size) of the dims that are not -1: what a request's shape must repeat. Cached:
    this runs for every input of every request."""
    return tuple((i, d) for i, d in enumerate(dims) if d != -1)


@dataclass(frozen=True, slots=True)
class TokenRanges:
    """What a BERT model's embedding tables hold, from the config parameters the builder
    writes (`vocab_size`, `type_vocab_size`, `max_position_embeddings`). A value outside them
    fails the whole batch in the runtime (an index out of range), so each request is checked
    alone, on the event loop, before it joins one."""

    vocab_size: int | None
    type_vocab_size: int | None
    max_positions: int | None

    @classmethod
    def from_config(cls, config: model_config_pb2.ModelConfig) -> TokenRanges | None:
        values = [
            _size_parameter(config, key)
            for key in ("vocab_size", "type_vocab_size", "max_position_embeddings")
        ]
        return cls(*values) if any(v is not None for v in values) else None

    def check(self, feed: dict[str, np.ndarray], model: str) -> None:
        ids = feed.get(INPUT_IDS)
        types = feed.get(TOKEN_TYPE_IDS)
        mask = feed.get(ATTENTION_MASK)
        first = ids if ids is not None else mask if mask is not None else types
        if first is None:
            return
        shape = first.shape
        for other in (mask, types):
            if other is not None and other.shape != shape:
                names = [n for n in _TOKEN_INPUTS if n in feed]
                raise InvalidInput(
                    f"inputs '{names[0]}' {list(shape)} and "
                    f"'{next(n for n in names if feed[n] is other)}' {list(other.shape)} of "
                    f"model '{model}' must have the same shape (one value per token)"
                )
        if self.max_positions is not None and shape and shape[-1] > self.max_positions:
            name = next(n for n in _TOKEN_INPUTS if feed.get(n) is first)
            raise InvalidInput(
                f"input '{name}' has {shape[-1]} tokens and model '{model}' holds "
                f"{self.max_positions} positions (max_position_embeddings): split the text "
                "into windows of at most that"
            )
        if ids is not None and self.vocab_size is not None:
            _check_below(ids, INPUT_IDS, self.vocab_size, f"vocab_size of model '{model}'")
        if types is not None and self.type_vocab_size is not None:
            what = f"type_vocab_size of model '{model}'"
            _check_below(types, TOKEN_TYPE_IDS, self.type_vocab_size, what)


_TOKEN_INPUTS = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)


def _size_parameter(config: model_config_pb2.ModelConfig, key: str) -> int | None:
    if key not in config.parameters:
        return None
    text = config.parameters[key].string_value.strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"model '{config.name}': parameters.{key} must be a positive integer, got '{text}'"
        )
    return int(text)


def _check_below(array: np.ndarray, name: str, limit: int, what: str) -> None:
    """Every value in 0..limit-1. One reduction: viewed as unsigned, a negative integer reads
    2**(bits-1) or more. (This runs for every request: no more than that reduction.)"""
    unsigned = _UNSIGNED.get(array.dtype)
    if unsigned is None and array.dtype.kind != "u":
        return  # not integers: the datatype check speaks for them
    view = array if unsigned is None else array.view(unsigned)
    # past the signed maximum, only a negative value reads larger
    read_limit = limit if unsigned is None else min(limit, 1 << (8 * array.dtype.itemsize - 1))
    if not array.size or int(view.max()) < read_limit:
        return
    where = np.argwhere((array < 0) | (array >= limit))[0]
    value = int(array[tuple(where)])
    raise InvalidInput(
        f"input '{name}' holds {value} at {list(map(int, where))}, outside 0..{limit - 1} "
        f"({what}): send token ids from this model's tokenizer"
    )


# signed integer dtype -> the unsigned one of its size, for _check_below's one reduction
_UNSIGNED = {np.dtype(f"<i{n}"): np.dtype(f"<u{n}") for n in (1, 2, 4, 8)}
