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
from bertserve.messages import (
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    SharedMemoryRef,
)
from bertserve.tensors import (
    checked_count,
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
    if header_length == 0:
        # Triton's raw binary request: the body is the model's only input, nothing else.
        raw = np.frombuffer(body, dtype=np.uint8)
        return InferRequest(
            model_name=model_name,
            model_version=model_version,
            inputs=[InferInput("", "", (), raw)],
            binary_outputs=True,
            raw=True,
        )
    json_part, binary = _split_body(body, header_length)
    doc = _loads(json_part)
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidInput("Unable to parse 'inputs': the request needs an 'inputs' list")
    request_id = doc.get("id", "")
    request_id = request_id if isinstance(request_id, str) else str(request_id)
    inputs: list[InferInput] = []
    offset = 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(raw, i, binary, offset, model_name, len(body))
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"unexpected additional input data for model '{model_name}': the body carries "
            f"{len(binary)} bytes of binary tensor data but the inputs' binary_data_size add "
            f"up to {offset}"
        )
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    outputs = _decode_outputs(doc.get("outputs"))
    timeout = parameters.get("timeout", 0)
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        id=request_id,
        outputs=outputs,
        parameters=parameters,
        timeout_us=int(timeout) if isinstance(timeout, int) and timeout > 0 else 0,
        binary_outputs=bool(parameters.get("binary_data_output", False)),
    )


def _uint(params: dict[str, Any], key: str) -> int:
    value = params.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"Unable to parse '{key}': expected a non-negative integer")
    return value


def shared_memory_ref(params: dict[str, Any]) -> SharedMemoryRef | None:
    """The shared memory parameters of an input or a requested output, None without them."""
    if "shared_memory_region" not in params:
        return None
    region = params["shared_memory_region"]
    if not isinstance(region, str):
        raise InvalidInput("Unable to parse 'shared_memory_region': expected a string")
    return SharedMemoryRef(
        region, _uint(params, "shared_memory_offset"), _uint(params, "shared_memory_byte_size")
    )


def _decode_input(
    raw: Any, index: int, binary: memoryview, offset: int, model_name: str, received: int
) -> tuple[InferInput, int]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"Unable to parse 'name': inputs[{index}] has no 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"Unable to parse 'datatype': input '{name}' has no 'datatype'")
    dtype = datatype_to_numpy(datatype)
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        type(d) is int and d >= 0
        for d in shape  # not bool, which is an int in Python
    ):
        raise InvalidInput(
            f"Unable to parse 'shape': input '{name}': 'shape' must be a list of non-negative "
            "integers"
        )
    count = math.prod(shape)
    if count > _INT64_MAX:
        raise InvalidInput(
            f"invalid shape for input '{name}': shape {_shape_text(shape)} causes total element "
            f"count to exceed maximum size of {_INT64_MAX}"
        )
    if dtype.itemsize > 1 and count > _INT64_MAX // dtype.itemsize:
        raise InvalidInput(
            f"byte size overflow for input '{name}': element count ({count}) * data type size "
            f"({dtype.itemsize}) exceeds maximum allowed size ({_INT64_MAX})"
        )
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"input '{name}': 'parameters' must be a JSON object")
    given = [
        field
        for field, present in (
            ("'data'", "data" in raw),
            ("'binary_data_size'", "binary_data_size" in params),
            ("'shared_memory_region'", "shared_memory_region" in params),
        )
        if present
    ]
    if len(given) != 1:
        raise InvalidInput(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But "
            + ("no field is set" if not given else "set " + " ".join(given))
        )
    shm = shared_memory_ref(params)
    if shm is not None:
        return InferInput(name, datatype, tuple(shape), _EMPTY, shm), 0
    count = checked_count(name, shape, received)  # before anything is allocated for it
    if "binary_data_size" in params:
        size = _uint(params, "binary_data_size")
        if offset + size > len(binary):
            raise InvalidInput(
                f"unexpected size for input '{name}', expecting {offset + size - len(binary)} "
                f"additional bytes for model '{model_name}'"
            )
        chunk = binary[offset : offset + size]
        if datatype == "BYTES":
            data = deserialize_bytes(chunk, count, name, model_name, shape)
        elif size == count * dtype.itemsize:
            data = np.frombuffer(chunk, dtype=dtype).reshape(shape)
        else:
            data = np.frombuffer(chunk, dtype=np.uint8)  # the engine names the mismatch
        return InferInput(name, datatype, tuple(shape), data), size
    data = _json_data(raw["data"], name, datatype, dtype)
    if datatype == "BYTES":
        shaped = data.reshape(shape) if data.size == count else data
        return InferInput(name, datatype, tuple(shape), shaped), 0
    if data.size != count:
        raise InvalidInput(
            f"input '{name}' has {data.size} elements but shape {shape} needs {count}"
        )
    return InferInput(name, datatype, tuple(shape), data.reshape(shape)), 0


_EMPTY = np.empty(0, dtype=np.uint8)
_INT64_MAX = 2**63 - 1
#: tritonserver's limit on the nesting of a tensor's JSON `data`.
_MAX_JSON_DEPTH = 100


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _check_depth(values: Any) -> None:
    """tritonserver refuses `data` nested 100 deep or more (numpy would stop at 64 anyway)."""
    depth, value = 0, values
    while isinstance(value, list):
        depth += 1
        if depth >= _MAX_JSON_DEPTH:
            raise InvalidInput(
                f"JSON nesting depth exceeds maximum allowed limit ({_MAX_JSON_DEPTH})"
            )
        value = value[0] if value else None


def _json_data(values: Any, name: str, datatype: str, dtype: np.dtype) -> np.ndarray:
    if not isinstance(values, list):
        values = [values]
    _check_depth(values)
    if datatype == "BYTES":
        flat: list[Any] = []
        _flatten(values, flat)
        out = np.empty(len(flat), dtype=object)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise InvalidInput(f"input '{name}': BYTES data in JSON must be strings")
            out[i] = item.encode("utf-8")
        return out
    try:
        array = np.asarray(values)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}': 'data' is not a regular array: {exc}") from None
    if array.size == 0:
        return np.empty(0, dtype)
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and dtype.kind in "biu"):
        kind = _JSON_KINDS.get(array.dtype.kind, "values of mixed or unknown types")
        raise InvalidInput(f"input '{name}': 'data' holds {kind}, not {datatype} values")
    if datatype == "BOOL" and array.dtype.kind != "b":
        raise InvalidInput(f"input '{name}': BOOL data must be true/false")
    if dtype.kind in "iu" and array.dtype.kind in "iu":
        # astype would wrap a value the datatype cannot hold (300 as UINT8 is 44) silently
        info = np.iinfo(dtype)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InvalidInput(
                f"input '{name}': value {bad} does not fit {datatype} ({info.min}..{info.max})"
            )
    elif dtype.kind == "f" and array.dtype.kind != "b":
        # nor make infinite one a float type cannot hold (65520 as FP16)
        largest = float(np.finfo(dtype).max)
        too_big = np.flatnonzero(np.abs(array) > largest)
        if too_big.size:
            raise InvalidInput(
                f"input '{name}': value {array.reshape(-1)[too_big[0]]} does not fit "
                f"{datatype} (at most {largest:g} in magnitude)"
            )
    return array.astype(dtype, copy=False).reshape(-1)


def _flatten(values: list[Any], into: list[Any]) -> None:
    for value in values:
        if isinstance(value, list):
            _flatten(value, into)
        else:
            into.append(value)


# numpy's kind of a parsed JSON array -> what the client sent, in words
_JSON_KINDS = {
    "f": "numbers with a fraction or exponent",
    "U": "strings",
    "O": "values of mixed types or integers beyond 64 bits",
    "b": "true/false",
}


def _decode_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("Unable to parse 'outputs': 'outputs' must be a list")
    outputs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(
                f"Unable to parse 'name': outputs[{i}] must be an object with a 'name'"
            )
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"outputs[{i}].parameters must be an object")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput("Unable to parse 'binary_data': expected true or false")
        shm = shared_memory_ref(params)
        if shm is not None and "classification" in params:
            raise InvalidInput("Output can't set both 'shared_memory_region' and 'classification'")
        if shm is not None and binary:
            raise InvalidInput("Output can't set both 'shared_memory_region' and 'binary_data'")
        outputs.append(
            RequestedOutput(
                item["name"],
                binary,
                params,
                classification=_classification(params),
                shm=shm,
            )
        )
    return outputs


def _classification(params: dict[str, Any]) -> int:
    if "classification" not in params:
        return 0
    value = params["classification"]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput("Unable to set 'classification': expected a non-negative integer")
    return value


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
        if out.shm is not None:
            pass  # the data went to the client's shared memory region
        elif binary_for.get(out.name, request.binary_outputs):
            raw = _tensor_bytes(out.data, out.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_values(out.data, out.datatype, out.name)
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


def _json_values(array: np.ndarray, datatype: str, name: str = "") -> Any:
    if datatype == "BYTES":
        try:
            return [
                v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)
            ]
        except UnicodeDecodeError:
            raise InvalidInput(
                f"output '{name}' holds bytes that are not UTF-8, which a JSON string cannot "
                'carry: ask for it as binary data ("binary_data": true)'
            ) from None
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
            entry["data"] = _json_values(array, datatype, name)
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
        if size is None and "data" not in out:
            continue  # an output placed in shared memory: the reply names it, holds no data
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
