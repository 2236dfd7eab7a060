"""Triton's gRPC messages (the compiled protos shipped in tritonclient) <-> protocol-neutral
requests and responses, both directions.

Server side: `decode_request` / `encode_response` / `stream_response` / `stream_error`, and
`from_json` for the engine's metadata, statistics and index documents. Client side (the perf
load generator): `encode_request` / `decode_response`.

Tensor bytes bypass protobuf's parser and serializer: upb copies every `bytes` field into its
arena on parse and again on each access, so `raw_input_contents` are cut out of the received
buffer by a small wire scan and become numpy views over it, and `raw_output_contents` are
appended to the serialized header as length-delimited fields (protobuf allows fields in any
order, and repeated fields may come in pieces)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from tritonclient.grpc import service_pb2

from bertserve.errors import InvalidInput
from bertserve.messages import (
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    SharedMemoryRef,
)
from bertserve.tensors import (
    bytes_array,
    checked_count,
    datatype_to_numpy,
    deserialize_bytes,
    numpy_to_datatype,
    serialize_bytes,
)

__all__ = [
    "decode_request",
    "encode_response",
    "stream_response",
    "stream_error",
    "request_identity",
    "from_json",
    "parameters_to_dict",
    "encode_request",
    "decode_response",
]

M = TypeVar("M", bound=Message)

_REQUEST = service_pb2.ModelInferRequest
_RESPONSE = service_pb2.ModelInferResponse
_RAW_INPUT = _REQUEST.DESCRIPTOR.fields_by_name["raw_input_contents"].number
_RAW_OUTPUT = _RESPONSE.DESCRIPTOR.fields_by_name["raw_output_contents"].number
_STREAM_RESPONSE = service_pb2.ModelStreamInferResponse.DESCRIPTOR.fields_by_name["infer_response"]

# InferTensorContents field that carries each datatype (FP16 and BF16 travel raw only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


# -- wire format ------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 64:
        if pos >= len(buf):
            raise _WireError("it ends inside a field (truncated?)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise _WireError("it holds a malformed varint")


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
    """A length-delimited field, as pieces to join."""
    return [_varint_bytes(number << 3 | 2), _varint_bytes(len(payload)), payload]


class _WireError(ValueError):
    """The bytes are not a protobuf message (the caller names the message type)."""


def _cut(buf: bytes, number: int) -> tuple[bytes, list[memoryview]]:
    """Split a serialized message into the rest of it and the payloads of top-level
    length-delimited field `number`, which stay views over `buf`."""
    view = memoryview(buf)
    rest: list[memoryview] = []
    found: list[memoryview] = []
    pos = kept = 0
    size = len(buf)
    while pos < size:
        start = pos
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if key >> 3 == number:
                if pos + length > size:
                    raise _WireError("it ends inside a field (truncated?)")
                if kept < start:
                    rest.append(view[kept:start])
                found.append(view[pos : pos + length])
                kept = pos = pos + length
                continue
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise _WireError(f"it holds a field of unsupported wire type {wire}")
    if pos > size:
        raise _WireError("it ends inside a field (truncated?)")
    if not found:
        return buf, found
    rest.append(view[kept:])
    return b"".join(rest), found


def _parse(message_type: type[M], buf: bytes, number: int) -> tuple[M, list[memoryview]]:
    """The message without field `number`, and that field's payloads as views over `buf`."""
    try:
        rest, cut = _cut(buf, number)
        return message_type.FromString(rest), cut
    except (_WireError, DecodeError) as exc:
        raise InvalidInput(
            f"the message is not a valid {message_type.DESCRIPTOR.name}: {exc}"
        ) from None


# -- parameters -------------------------------------------------------------------------------


def parameters_to_dict(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A protobuf map of InferParameter / ModelRepositoryParameter -> plain values."""
    out: dict[str, Any] = {}
    for key, param in parameters.items():
        which = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, which) if which else None
    return out


def _set_parameters(target: Any, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value > 2**63 - 1:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


# -- server side ------------------------------------------------------------------------------


def decode_request(buf: bytes) -> InferRequest:
    """A serialized ModelInferRequest -> InferRequest (raw tensors as views over `buf`).

    As tritonserver reads it: an input in shared memory carries no data here; one with typed
    `contents` takes them; every other takes the next of `raw_input_contents`, in order."""
    msg, raw = _parse(_REQUEST, buf, _RAW_INPUT)
    model = msg.model_name
    inputs = []
    used = 0
    for i, tensor in enumerate(msg.inputs):
        params = parameters_to_dict(tensor.parameters)
        shm = _shared_memory_ref(params, tensor.name)
        if shm is not None:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"unexpected 'content' provided when using shared memory for input tensor "
                    f"'{tensor.name}' for model '{model}'"
                )
            inputs.append(
                InferInput(tensor.name, tensor.datatype, tuple(tensor.shape), _EMPTY, shm)
            )
            continue
        if tensor.HasField("contents"):
            if raw:
                raise InvalidInput(
                    f"contents field must not be specified when using raw_input_contents for "
                    f"'{tensor.name}' for model '{model}'"
                )
            inputs.append(_decode_input(tensor, i, None, model, len(buf)))
            continue
        if used >= len(raw):
            raise InvalidInput(
                f"unable to find data for input tensor '{tensor.name}' for model '{model}' in "
                "request."
            )
        inputs.append(_decode_input(tensor, i, raw[used], model, len(buf)))
        used += 1
    if used != len(raw):
        raise InvalidInput(
            f"the request carries {len(raw)} raw_input_contents for {used} inputs that read "
            "one: send one per input (except those in shared memory or typed 'contents'), in "
            "the order of 'inputs'"
        )
    parameters = parameters_to_dict(msg.parameters)
    timeout = parameters.get("timeout", 0)
    return InferRequest(
        model_name=model,
        model_version=msg.model_version,
        inputs=inputs,
        id=msg.id,
        outputs=[_decode_output(o) for o in msg.outputs] or None,
        parameters=parameters,
        timeout_us=timeout if isinstance(timeout, int) and timeout > 0 else 0,
    )


_EMPTY = np.empty(0, dtype=np.uint8)


def _shared_memory_ref(params: Mapping[str, Any], name: str) -> SharedMemoryRef | None:
    if "shared_memory_region" not in params:
        return None
    region = params["shared_memory_region"]
    offset = params.get("shared_memory_offset", 0)
    size = params.get("shared_memory_byte_size", 0)
    if not isinstance(region, str):
        raise InvalidInput(f"'{name}': shared_memory_region must be a string parameter")
    for key, value in (("shared_memory_offset", offset), ("shared_memory_byte_size", size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidInput(f"'{name}': {key} must be a non-negative integer parameter")
    return SharedMemoryRef(region, offset, size)


def request_identity(buf: bytes) -> tuple[str, str]:
    """The id and model name of a serialized ModelInferRequest, ("", "") when it has none or
    is not one; for naming a request in an error reply after decode_request failed."""
    try:
        msg, _ = _parse(_REQUEST, buf, _RAW_INPUT)
    except InvalidInput:
        return "", ""
    return msg.id, msg.model_name


def _decode_input(
    tensor: Any, index: int, raw: memoryview | None, model: str, received: int
) -> InferInput:
    name = tensor.name
    if not name:
        raise InvalidInput(f"inputs[{index}] has no 'name'")
    datatype = tensor.datatype
    dtype = datatype_to_numpy(datatype)
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
    count = checked_count(name, shape, received)
    if raw is None:
        return InferInput(name, datatype, shape, _contents(tensor, datatype, count, shape))
    if datatype == "BYTES":
        return InferInput(name, datatype, shape, deserialize_bytes(raw, count, name, model, shape))
    if len(raw) != count * dtype.itemsize:
        # The engine answers with Triton's words, once the shape is known to be right.
        return InferInput(name, datatype, shape, np.frombuffer(raw, dtype=np.uint8))
    return InferInput(name, datatype, shape, np.frombuffer(raw, dtype=dtype).reshape(shape))


def _contents(tensor: Any, datatype: str, count: int, shape: tuple[int, ...]) -> np.ndarray:
    name = tensor.name
    field = _CONTENTS.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input '{name}': {datatype} has no typed 'contents' field; send it in "
            "raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    if datatype == "BYTES":
        return bytes_array(list(values), count, shape)  # the engine names a count mismatch
    if len(values) != count:
        others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
        hint = f" (it fills {', '.join(others)}; {datatype} reads {field})" if others else ""
        raise InvalidInput(
            f"input '{name}' has {len(values)} elements but shape {list(shape)} needs {count}{hint}"
        )
    data = np.fromiter(values, dtype=datatype_to_numpy(datatype), count=count)
    return data.reshape(shape)


def _decode_output(output: Any) -> RequestedOutput:
    parameters = parameters_to_dict(output.parameters)
    shm = _shared_memory_ref(parameters, output.name)
    classification = parameters.get("classification", 0)
    if (
        not isinstance(classification, int)
        or isinstance(classification, bool)
        or (classification < 0)
    ):
        raise InvalidInput("Unable to set 'classification': expected a non-negative integer")
    if shm is not None and classification:
        raise InvalidInput("Output can't set both 'shared_memory_region' and 'classification'")
    return RequestedOutput(output.name, None, parameters, classification=classification, shm=shm)


def _raw(array: np.ndarray, datatype: str) -> bytes | memoryview:
    if datatype == "BYTES":
        return serialize_bytes(array)
    flat = np.ascontiguousarray(array, dtype=datatype_to_numpy(datatype)).reshape(-1)
    return flat.data.cast("B") if flat.size else b""


def encode_response(response: InferResponse) -> bytes:
    """InferResponse -> a serialized ModelInferResponse, tensors in raw_output_contents."""
    msg = _RESPONSE(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    pieces: list[bytes | memoryview] = []
    for out in response.outputs:
        msg.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        # An output in shared memory keeps its place with empty contents, as in tritonserver.
        data = b"" if out.shm is not None else _raw(out.data, out.datatype)
        pieces += _field(_RAW_OUTPUT, data)
    _set_parameters(msg.parameters, response.parameters)
    return b"".join([msg.SerializeToString(), *pieces])


def stream_response(infer_response: bytes) -> bytes:
    """A serialized ModelInferResponse wrapped as a ModelStreamInferResponse."""
    return b"".join(_field(_STREAM_RESPONSE.number, infer_response))


def stream_error(message: str, request_id: str = "", model_name: str = "") -> bytes:
    """A stream's error reply; it names the request so the client can match it."""
    reply: Message = service_pb2.ModelStreamInferResponse(
        error_message=message,
        infer_response=_RESPONSE(id=request_id, model_name=model_name),
    )
    return reply.SerializeToString()


def from_json(doc: dict[str, Any], message_type: type[M]) -> M:
    """One of the engine's JSON documents (Triton's HTTP shapes) -> the gRPC message of the
    same schema. Unknown fields raise, so a drift between the two shows up in tests."""
    return json_format.ParseDict(doc, message_type())


# -- client side ------------------------------------------------------------------------------


def encode_request(
    model_name: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
    model_version: str = "",
    request_id: str = "",
    parameters: Mapping[str, Any] | None = None,
) -> bytes:
    """A serialized ModelInferRequest as tritonclient sends it: tensors in raw_input_contents."""
    msg = _REQUEST(model_name=model_name, model_version=model_version, id=request_id)
    pieces: list[bytes | memoryview] = []
    for name, array in inputs.items():
        datatype = numpy_to_datatype(array.dtype)
        msg.inputs.add(name=name, datatype=datatype, shape=array.shape)
        pieces += _field(_RAW_INPUT, _raw(array, datatype))
    for name in outputs or ():
        msg.outputs.add(name=name)
    _set_parameters(msg.parameters, parameters or {})
    return b"".join([msg.SerializeToString(), *pieces])


def decode_response(buf: bytes) -> dict[str, np.ndarray]:
    """A serialized ModelInferResponse -> output name -> array (raw ones are views)."""
    msg, raw = _parse(_RESPONSE, buf, _RAW_OUTPUT)
    result: dict[str, np.ndarray] = {}
    for i, out in enumerate(msg.outputs):
        shape = tuple(out.shape)
        if i < len(raw):
            if out.datatype == "BYTES":
                array = deserialize_bytes(raw[i], math.prod(shape), out.name)
            else:
                array = np.frombuffer(raw[i], dtype=datatype_to_numpy(out.datatype))
            result[out.name] = array.reshape(shape)
        else:
            result[out.name] = _contents(out, out.datatype, math.prod(shape), shape)
    return result
