"""Check a request against its model's completed config: the one place every front end's
requests pass, so HTTP and gRPC fail with the same messages."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import model_config_pb2

from bertserve.errors import InvalidInput
from bertserve.messages import InferRequest, RequestedOutput
from bertserve.tensors import config_type_to_datatype

__all__ = ["TensorSignature", "Signature"]


@dataclass(frozen=True, slots=True)
class TensorSignature:
    name: str
    datatype: str
    dims: tuple[int, ...]  # without the batch axis
    optional: bool = False
    reshape: tuple[int, ...] | None = None


class Signature:
    """A model version's inputs and outputs, ready for fast request checks."""

    def __init__(self, config: model_config_pb2.ModelConfig) -> None:
        self.model = config.name
        self.max_batch_size = config.max_batch_size
        self.inputs = {
            i.name: TensorSignature(
                i.name,
                config_type_to_datatype(model_config_pb2.DataType.Name(i.data_type)),
                tuple(i.dims),
                i.optional,
                tuple(i.reshape.shape) if i.HasField("reshape") else None,
            )
            for i in config.input
        }
        self.outputs = {
            o.name: TensorSignature(
                o.name,
                config_type_to_datatype(model_config_pb2.DataType.Name(o.data_type)),
                tuple(o.dims),
            )
            for o in config.output
        }
        self.required = [name for name, sig in self.inputs.items() if not sig.optional]
        self.output_names = list(self.outputs)

    def check_inputs(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        """Return the model's feed (name -> array, reshaped where configured) and the batch size."""
        feed: dict[str, np.ndarray] = {}
        batch = 0
        batching = self.max_batch_size > 0
        for tensor in request.inputs:
            sig = self.inputs.get(tensor.name)
            if sig is None:
                raise InvalidInput(
                    f"unexpected inference input '{tensor.name}' for model '{self.model}': it "
                    f"takes {', '.join(self.inputs)}"
                )
            if tensor.name in feed:
                raise InvalidInput(f"input '{tensor.name}' is given twice")
            if tensor.datatype != sig.datatype:
                raise InvalidInput(
                    f"input '{tensor.name}' has datatype {tensor.datatype} but model "
                    f"'{self.model}' expects {sig.datatype}"
                )
            shape = tuple(tensor.shape)
            if batching:
                if len(shape) != len(sig.dims) + 1:
                    raise InvalidInput(
                        f"input '{tensor.name}' has shape {list(shape)} but model "
                        f"'{self.model}' expects [batch] + {list(sig.dims)} (max_batch_size "
                        f"{self.max_batch_size})"
                    )
                this_batch, item_shape = shape[0], shape[1:]
                if this_batch < 1 or this_batch > self.max_batch_size:
                    raise InvalidInput(
                        f"input '{tensor.name}' has batch size {this_batch}, outside 1.."
                        f"{self.max_batch_size} (max_batch_size of model '{self.model}'); "
                        "split the request"
                    )
                if batch and this_batch != batch:
                    raise InvalidInput(
                        f"inputs disagree on the batch size: '{tensor.name}' has {this_batch}, "
                        f"another input has {batch}"
                    )
                batch = this_batch
            else:
                item_shape = shape
            if not _matches(item_shape, sig.dims):
                raise InvalidInput(
                    f"input '{tensor.name}' has shape {list(shape)} but model '{self.model}' "
                    f"expects {'[batch] + ' if batching else ''}{list(sig.dims)} "
                    "(-1 = any size)"
                )
            data = tensor.data
            if sig.reshape is not None:
                data = data.reshape(((batch,) if batching else ()) + sig.reshape)
            feed[tensor.name] = data
        missing = [name for name in self.required if name not in feed]
        if missing:
            raise InvalidInput(
                f"model '{self.model}' needs input(s) {', '.join(missing)}, which the request "
                "does not carry"
            )
        return feed, (batch if batching else 1)

    def check_outputs(self, requested: list[RequestedOutput] | None) -> list[str]:
        if not requested:
            return self.output_names
        names = []
        for out in requested:
            if out.name not in self.outputs:
                raise InvalidInput(
                    f"unknown requested output '{out.name}' for model '{self.model}': it "
                    f"produces {', '.join(self.outputs)}"
                )
            names.append(out.name)
        return names


def _matches(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    if len(shape) != len(dims):
        return False
    return all(shape[i] == d for i, d in _fixed_dims(dims))


@functools.cache
def _fixed_dims(dims: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(axis, size) of the dims that are not -1: what a request's shape must repeat. Cached:
    this runs for every input of every request."""
    return tuple((i, d) for i, d in enumerate(dims) if d != -1)
