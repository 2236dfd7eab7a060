"""The v2 JSON + binary codec: round trips and every malformed body."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from bertserve.errors import InvalidInput
from bertserve.messages import InferOutput, InferResponse
from bertserve.protocol.http_codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def test_binary_round_trip_is_zero_copy():
    ids = np.arange(12, dtype=np.int64).reshape(2, 6)
    body, header = encode_request({"input_ids": ids}, request_id="r1")
    request = decode_request(body, header, "m", "")
    tensor = request.inputs[0]
    assert request.id == "r1" and tensor.datatype == "INT64" and tensor.shape == (2, 6)
    np.testing.assert_array_equal(tensor.data, ids)
    assert not tensor.data.flags.owndata  # a view over the body


def test_json_round_trip_and_bytes():
    body, header = encode_request(
        {"x": np.array([[1.5, 2.5]], np.float32), "s": np.array([b"hi", b"there"], object)},
        binary_inputs=False,
    )
    assert header is None
    request = decode_request(body, None, "m", "1")
    np.testing.assert_array_equal(request.inputs[0].data, [[1.5, 2.5]])
    assert list(request.inputs[1].data) == [b"hi", b"there"]


def test_response_binary_and_json_outputs_per_request():
    body, header = encode_request(
        {"x": np.zeros((1, 2), np.float32)}, outputs=["a", "b"], binary_outputs=True
    )
    request = decode_request(body, header, "m", "")
    request.outputs[1].binary = False  # type: ignore[index]
    response = InferResponse(
        "m",
        "1",
        [
            InferOutput("a", "FP32", (1, 2), np.array([[1, 2]], np.float32)),
            InferOutput("b", "INT64", (1, 2), np.array([[3, 4]], np.int64)),
        ],
        id="x",
    )
    payload, json_len = encode_response(response, request)
    assert json_len is not None
    doc = orjson.loads(payload[:json_len])
    assert doc["id"] == "x"
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert doc["outputs"][1]["data"] == [3, 4]
    decoded = decode_response(payload, json_len)
    np.testing.assert_array_equal(decoded["a"], [[1, 2]])


def _req(inputs, binary=b""):
    doc = orjson.dumps({"inputs": inputs})
    return decode_request(doc + binary, len(doc) if binary else None, "m", "")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", "Unable to parse 'inputs'"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT65", "data": [1]}]}',
            "unknown datatype 'INT65'",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [1]}]}',
            "has 1 elements but shape",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64"}]}',
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But no field is set",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1], '
            b'"parameters": {"shared_memory_region": "r"}}]}',
            "But set 'data' 'shared_memory_region'",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": "1", "datatype": "INT64", "data": [1]}]}',
            "'shape' must be",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": ["a"]}]}',
            "not INT64",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", '
            b'"data": [[1], [2, 3]]}]}',
            "regular array",
        ),
        (b'{"inputs": [{"shape": [1], "datatype": "INT64", "data": [1]}]}', "no 'name'"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}],'
            b' "outputs": [{"name": "y", "parameters": {"classification": -3}}]}',
            "Unable to set 'classification'",
        ),
        (
            b'{"inputs": [], "outputs": [{"name": "y", "parameters": '
            b'{"classification": 3, "shared_memory_region": "r"}}]}',
            "Output can't set both 'shared_memory_region' and 'classification'",
        ),
        (
            b'{"inputs": [], "outputs": [{"name": "y", "parameters": '
            b'{"binary_data": true, "shared_memory_region": "r"}}]}',
            "Output can't set both 'shared_memory_region' and 'binary_data'",
        ),
    ],
)
def test_malformed_json_bodies(body, message):
    with pytest.raises(InvalidInput, match=message):
        decode_request(body, None, "m", "")


def test_binary_size_mismatches():
    spec = [
        {"name": "x", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}
    ]
    with pytest.raises(InvalidInput, match="expecting 8 additional bytes for model 'm'"):
        _req(spec, b"\0" * 8)
    with pytest.raises(InvalidInput, match="unexpected additional input data for model 'm'"):
        _req(spec, b"\0" * 24)
    spec[0]["parameters"]["binary_data_size"] = 8
    # The size that does not fill the shape reaches the engine as raw bytes, which names it.
    tensor = _req(spec, b"\0" * 8).inputs[0]
    assert tensor.data.dtype == np.uint8 and tensor.data.nbytes == 8
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        decode_request(b"{}", 99, "m", "")


def test_bytes_tensors_arrive_flat_with_the_elements_found():
    spec = [{"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]
    assert _req(spec, b"\x05\0\0\0hello").inputs[0].data.tolist() == [b"hello"]
    spec[0]["parameters"]["binary_data_size"] = 7
    with pytest.raises(InvalidInput, match="claims 5 bytes but only 3 remain"):
        _req(spec, b"\x05\0\0\0hel")
    spec[0]["parameters"]["binary_data_size"] = 2
    with pytest.raises(InvalidInput, match="incomplete string length indicator"):
        _req(spec, b"\x05\0")


def test_raw_binary_body_is_one_unnamed_input():
    request = decode_request(b"\x01\x02\x03\x04", 0, "m", "")
    assert request.raw and request.binary_outputs
    assert request.inputs[0].name == "" and request.inputs[0].data.tobytes() == b"\x01\x02\x03\x04"


def test_non_utf8_bytes_cannot_travel_as_json():
    response = InferResponse(
        "m", "1", [InferOutput("s", "BYTES", (2,), np.array([b"ok", b"\xff"], dtype=object))]
    )
    request = decode_request(b'{"inputs": []}', None, "m", "")
    with pytest.raises(InvalidInput, match="not UTF-8.*binary_data"):
        encode_response(response, request)
    request.binary_outputs = True
    payload, json_len = encode_response(response, request)
    assert decode_response(payload, json_len)["s"].tolist() == [b"ok", b"\xff"]


def test_zero_size_outputs_encode_in_binary_and_json():
    body, header = encode_request({"x": np.zeros((1, 2), np.float32)}, binary_outputs=True)
    request = decode_request(body, header, "m", "")
    empty = np.zeros((1, 0), np.float32)
    response = InferResponse("m", "1", [InferOutput("a", "FP32", (1, 0), empty)])
    payload, json_len = encode_response(response, request)
    assert decode_response(payload, json_len)["a"].shape == (1, 0)
    request.binary_outputs = False
    payload, json_len = encode_response(response, request)
    assert json_len is None and orjson.loads(payload)["outputs"][0]["data"] == []
