"""Requests built by hand, below tritonclient, so they can be wrong on purpose: raw HTTP bodies
and serialized gRPC `ModelInferRequest`s for the model 'tiny', and the calls that send them."""

from __future__ import annotations

import http.client
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import orjson
from tritonclient.grpc import service_pb2 as pb

from tests.frontends.protocols import INPUTS

#: (name, datatype, shape, values or None for none) per input.
Tensors = list[tuple[str, str, list[int], Sequence[Any] | None]]

RAW4 = np.arange(4, dtype=np.int64).tobytes()
#: Four values every input of the tiny model takes (ids, mask and token types alike).
VALUES = (1, 1, 0, 0)


def post(url: str, path: str, body: bytes, headers: dict[str, str] | None = None,
         method: str = "POST") -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
    """(status, body, headers) of one raw HTTP request."""
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def json_body(tensors: Tensors | None = None, **fields: Any) -> bytes:
    """An HTTP infer request body in JSON, the tensors' values in `data`."""
    doc: dict[str, Any] = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "data": v or list(VALUES)}
            for n, d, s, v in (tensors or good())
        ]
    }
    doc.update(fields)
    return orjson.dumps(doc)


def good(datatype: str = "INT64", shape: list[int] | None = None,
         values: Sequence[Any] | None = VALUES) -> Tensors:  # fmt: skip
    """The three inputs, shape [1, 4], with any of datatype, shape or values changed."""
    return [(n, datatype, shape or [1, 4], values) for n in INPUTS]


_CONTENTS = {"INT64": "int64_contents", "INT32": "int_contents", "FP16": "fp32_contents"}


def grpc_request(tensors: Tensors | None = None, raw: list[bytes] | None = None,
                 contents: str = "", **fields: Any) -> bytes:  # fmt: skip
    """A serialized ModelInferRequest for 'tiny': the tensors' values in typed contents (the
    datatype's field unless `contents` names another), or raw bytes per input."""
    request = pb.ModelInferRequest(**{"model_name": "tiny", **fields})
    for name, datatype, shape, values in good() if tensors is None else tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if values is not None:
            getattr(tensor.contents, contents or _CONTENTS[datatype]).extend(values)
    request.raw_input_contents.extend(raw or [])
    return request.SerializeToString()


def grpc_infer(url: str, body: bytes) -> bytes:
    """Send serialized bytes to ModelInfer as they are."""
    with grpc.insecure_channel(url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        return call(body, timeout=30)
