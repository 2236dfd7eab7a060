"""KServe v2 JSON with Triton's binary tensor data extension, both directions.

Server side: `decode_request` / `encode_response`. Client side (the perf load generator):
`encode_request` / `decode_response`. Binary tensors become numpy views over the body."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from bertserve.errors import InvalidInput
from bertserve.messages import InferInput, InferRequest, InferResponse, RequestedOutput
from bertserve.tensors import (
    datatype_to_numpy,
    deserialize_bytes,
    numpy_to_datatype,
    serialize_bytes,
)

__all__ = [
    "HEADER_LENGTH",
    "decode_request",
    "encode_response",
    "encode_request",
    "decode_response",
    "error_body",
]

#: The HTTP header telling where the JSON part ends and binary tensor data begins.
HEADER_LENGTH = "inference-header-content-length"


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _split_body(body: bytes, header_length: int | None) -> tuple[memoryview, memoryview]:
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    if header_length < 0 or header_length > len(view):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {header_length} but the body has only "
            f"{len(view)} bytes"
        )
    return view[:header_length], view[header_length:]


def _loads(data: memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None


def decode_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str
) -> InferRequest:
    json_part, binary = _split_body(body, header_length)
    doc = _loads(json_part)
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    inputs: list[InferInput] = []
    offset = 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(raw, i, binary, offset)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"the body carries {len(binary)} bytes of binary tensor data but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    outputs = _decode_outputs(doc.get("outputs"))
    timeout = parameters.get("timeout", 0)
    request_id = doc.get("id", "")
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        id=request_id if isinstance(request_id, str) else str(request_id),
        outputs=outputs,
        parameters=parameters,
        timeout_us=int(timeout) if isinstance(timeout, int) and timeout > 0 else 0,
        binary_outputs=bool(parameters.get("binary_data_output", False)),
    )


def _decode_input(raw: Any, index: int, binary: memoryview, offset: int) -> tuple[InferInput, int]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}] has no 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input '{name}' has no 'datatype'")
    dtype = datatype_to_numpy(datatype)
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
    count = math.prod(shape)
    params = raw.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0:
            raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(
                f"input '{name}': binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} bytes left): the body is truncated or the size is wrong"
            )
        chunk = binary[offset : offset + size]
        if datatype == "BYTES":
            data = deserialize_bytes(chunk, count, name).reshape(shape)
        else:
            expected = count * dtype.itemsize
            if size != expected:
                raise InvalidInput(
                    f"input '{name}': binary_data_size is {size} bytes but shape {shape} of "
                    f"{datatype} needs {expected}"
                )
            data = np.frombuffer(chunk, dtype=dtype).reshape(shape)
        return InferInput(name, datatype, tuple(shape), data), size
    if "data" not in raw:
        raise InvalidInput(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    data = _json_data(raw["data"], name, datatype, dtype)
    if data.size != count:
        raise InvalidInput(
            f"input '{name}' has {data.size} elements but shape {shape} needs {count}"
        )
    return InferInput(name, datatype, tuple(shape), data.reshape(shape)), 0


def _json_data(values: Any, name: str, datatype: str, dtype: np.dtype) -> np.ndarray:
    if not isinstance(values, list):
        values = [values]
    if datatype == "BYTES":
        flat = np.asarray(values, dtype=object).reshape(-1)
        out = np.empty(flat.size, dtype=object)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise InvalidInput(f"input '{name}': BYTES data in JSON must be strings")
            out[i] = item.encode("utf-8")
        return out
    try:
        array = np.asarray(values)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}': 'data' is not a regular array: {exc}") from None
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and dtype.kind in "biu"):
        raise InvalidInput(
            f"input '{name}': 'data' holds {array.dtype.name} values, not {datatype}"
        )
    if datatype == "BOOL" and array.dtype.kind != "b":
        raise InvalidInput(f"input '{name}': BOOL data must be true/false")
    return array.astype(dtype, copy=False).reshape(-1)


def _decode_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list")
    outputs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{i}] must be an object with a 'name'")
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"outputs[{i}].parameters must be an object")
        if params.get("classification"):
            raise InvalidInput(
                f"output '{item['name']}': the classification extension is not served here"
            )
        binary = params.get("binary_data")
        outputs.append(
            RequestedOutput(item["name"], None if binary is None else bool(binary), params)
        )
    return outputs


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """The response body and, when binary tensors follow the JSON, the JSON part's length."""
    binary_for: dict[str, bool] = {}
    if request.outputs:
        for wanted in request.outputs:
            binary = wanted.binary
            binary_for[wanted.name] = binary if binary is not None else request.binary_outputs
    chunks: list[bytes | memoryview] = []
    outputs_json = []
    for out in response.outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.shape),
        }
        if binary_for.get(out.name, request.binary_outputs):
            raw = _tensor_bytes(out.data, out.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_values(out.data, out.datatype)
        outputs_json.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs_json,
    }
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _tensor_bytes(array: np.ndarray, datatype: str) -> bytes | memoryview:
    if datatype == "BYTES":
        return serialize_bytes(array)
    contiguous = np.ascontiguousarray(array, dtype=datatype_to_numpy(datatype))
    if contiguous.size == 0:
        return b""  # memoryview.cast refuses shapes with a zero in them
    return contiguous.data.cast("B")


def _json_values(array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
            for v in array.reshape(-1)
        ]
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == np.float16:
        return flat.astype(np.float32)
    return flat


# -- client side ------------------------------------------------------------------------------


def encode_request(
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
    binary_inputs: bool = True,
    binary_outputs: bool = True,
    request_id: str = "",
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """A request body as tritonclient would send it, and its JSON header length."""
    chunks: list[bytes | memoryview] = []
    entries = []
    for name, array in inputs.items():
        datatype = numpy_to_datatype(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary_inputs:
            raw = _tensor_bytes(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_values(array, datatype)
        entries.append(entry)
    doc: dict[str, Any] = {"inputs": entries}
    if request_id:
        doc["id"] = request_id
    params = dict(parameters or {})
    if outputs is not None:
        doc["outputs"] = [
            {"name": n, "parameters": {"binary_data": binary_outputs}} for n in outputs
        ]
    else:
        params["binary_data_output"] = binary_outputs
    if params:
        doc["parameters"] = params
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def decode_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    json_part, binary = _split_body(body, header_length)
    doc = _loads(json_part)
    if "error" in doc:
        raise InvalidInput(str(doc["error"]))
    result: dict[str, np.ndarray] = {}
    offset = 0
    for out in doc.get("outputs", []):
        shape = out["shape"]
        datatype = out["datatype"]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = binary[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                result[out["name"]] = deserialize_bytes(chunk, math.prod(shape)).reshape(shape)
            else:
                dtype = datatype_to_numpy(datatype)
                result[out["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(shape)
        else:
            result[out["name"]] = _json_data(
                out["data"], out["name"], datatype, datatype_to_numpy(datatype)
            ).reshape(shape)
    return result
