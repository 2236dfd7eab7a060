"""The gRPC codec against tritonclient's own request building and result reading."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.grpc import _utils, service_pb2

from bertserve.errors import InvalidInput
from bertserve.messages import InferOutput, InferResponse
from bertserve.protocol import grpc_codec
from bertserve.protocol.grpc_codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    from_json,
    parameters_to_dict,
    request_identity,
    stream_error,
    stream_response,
)
from bertserve.stats import ModelStats, RequestTiming

ARRAYS = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-3, 0, 3]], np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], np.int64),
    "UINT8": np.array([[0, 1, 255]], np.uint8),
    "UINT16": np.array([[0, 1, 65535]], np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1]], np.uint64),
    "FP16": np.array([[0.5, -1, 65504]], np.float16),
    "FP32": np.array([[0.25, -1e30, 3.5]], np.float32),
    "FP64": np.array([[0.1, -1e300, 2.5]], np.float64),
    "BYTES": np.array([[b"a", b"", "\u00e9".encode()]], dtype=object),
}


def tritonclient_request(
    arrays: dict[str, np.ndarray],
    request_id: str = "",
    outputs: tuple[str, ...] = (),
    timeout: int | None = None,
) -> bytes:
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), name)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    requested = [grpcclient.InferRequestedOutput(n) for n in outputs]
    request = _utils._get_inference_request(
        "m", inputs, "2", request_id, requested, 0, False, False, 0, timeout, None
    )
    return request.SerializeToString()


def base_of(array: np.ndarray) -> object:
    """The object at the bottom of a numpy view chain (through memoryviews)."""
    obj: object = array
    while True:
        if isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            return obj


def test_every_datatype_from_raw_contents_as_tritonclient_sends_them():
    buf = tritonclient_request(ARRAYS, "r1", outputs=("FP32",), timeout=1500)
    request = decode_request(buf)
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "r1")
    assert request.timeout_us == 1500 and request.parameters["timeout"] == 1500
    assert [o.name for o in request.outputs or []] == ["FP32"]
    for tensor in request.inputs:
        expected = ARRAYS[tensor.name]
        assert tensor.datatype == tensor.name and tensor.shape == expected.shape
        np.testing.assert_array_equal(tensor.data, expected)


def test_raw_tensors_are_views_over_the_received_buffer():
    buf = tritonclient_request({"INT64": np.arange(1000, dtype=np.int64).reshape(10, 100)})
    (tensor,) = decode_request(buf).inputs
    assert base_of(tensor.data) is buf
    assert not tensor.data.flags.writeable


@pytest.mark.parametrize("datatype", sorted(set(ARRAYS) - {"FP16"}))
def test_typed_contents(datatype):
    array = ARRAYS[datatype]
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=array.shape)
    getattr(tensor.contents, grpc_codec._CONTENTS[datatype]).extend(array.reshape(-1).tolist())
    (decoded,) = decode_request(request.SerializeToString()).inputs
    np.testing.assert_array_equal(decoded.data, array)
    assert decoded.data.shape == array.shape


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r.raw_input_contents.pop(),
            "unable to find data for input tensor 'BYTES' for model 'm' in request.",
        ),
        (lambda r: r.raw_input_contents.append(b"x"), "3 raw_input_contents for 2 inputs"),
        (lambda r: setattr(r.inputs[1], "datatype", "FP8"), "unknown datatype 'FP8'"),
        (lambda r: setattr(r.inputs[0], "name", ""), "inputs[0] has no 'name'"),
        (
            lambda r: r.inputs[1].contents.bytes_contents.append(b"x"),
            "contents field must not be specified when using raw_input_contents for 'BYTES' for "
            "model 'm'",
        ),
        (
            lambda r: r.raw_input_contents.__setitem__(1, b"\x05\0\0\0ab"),
            "claims 5 bytes but only 2 remain",
        ),
    ],
)
def test_bad_requests(change: object, message: str) -> None:
    request = service_pb2.ModelInferRequest.FromString(
        tritonclient_request({"INT64": ARRAYS["INT64"], "BYTES": ARRAYS["BYTES"]})
    )
    change(request)
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[")):
        decode_request(request.SerializeToString())


def test_sizes_that_do_not_fill_the_shape_reach_the_engine_flat():
    request = service_pb2.ModelInferRequest.FromString(
        tritonclient_request({"INT64": ARRAYS["INT64"], "BYTES": ARRAYS["BYTES"]})
    )
    request.inputs[0].shape[1] = 4
    request.inputs[1].shape[1] = 5
    numbers, strings = decode_request(request.SerializeToString()).inputs
    assert numbers.data.dtype == np.uint8 and numbers.data.nbytes == 24
    assert strings.data.shape == (3,)


def test_inputs_in_shared_memory_carry_no_data_and_take_no_raw_contents():
    request = service_pb2.ModelInferRequest.FromString(
        tritonclient_request({"INT64": ARRAYS["INT64"]})
    )
    shared = request.inputs.add(name="S", datatype="FP32", shape=[1, 4])
    shared.parameters["shared_memory_region"].string_param = "r"
    shared.parameters["shared_memory_byte_size"].int64_param = 16
    shared.parameters["shared_memory_offset"].int64_param = 8
    numbers, in_shm = decode_request(request.SerializeToString()).inputs
    np.testing.assert_array_equal(numbers.data, ARRAYS["INT64"])
    assert in_shm.shm is not None and (in_shm.shm.region, in_shm.shm.offset) == ("r", 8)
    assert in_shm.shm.byte_size == 16 and in_shm.data.size == 0
    shared.contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="unexpected 'content' provided when using shared"):
        decode_request(request.SerializeToString())


@pytest.mark.parametrize("cut", [1, 2, 5, 17])
def test_truncated_messages_are_named(cut):
    buf = tritonclient_request({"INT64": ARRAYS["INT64"]}, "abc")
    try:
        decode_request(buf[:-cut])
    except InvalidInput as exc:
        assert "not a valid ModelInferRequest" in str(exc) or "needs" in str(exc)
    else:  # a cut on a field boundary may still be a valid message, but not this request
        pytest.fail("a truncated request decoded")


def test_request_identity_survives_bad_tensors():
    request = service_pb2.ModelInferRequest(model_name="m", id="i-9")
    request.inputs.add(name="x", datatype="INT64", shape=[2])
    buf = request.SerializeToString()
    with pytest.raises(InvalidInput):
        decode_request(buf)
    assert request_identity(buf) == ("i-9", "m")
    assert request_identity(b"\xff") == ("", "")


def test_response_reads_back_with_tritonclient():
    outputs = [
        InferOutput(name, datatype, array.shape, array)
        for datatype, array in ARRAYS.items()
        for name in [datatype]
    ]
    response = InferResponse("m", "3", outputs, id="r2", parameters={"a": 1, "b": True})
    buf = encode_response(response)
    result = grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(buf))
    msg = result.get_response()
    assert (msg.model_name, msg.model_version, msg.id) == ("m", "3", "r2")
    assert parameters_to_dict(msg.parameters) == {"a": 1, "b": True}
    for datatype, array in ARRAYS.items():
        np.testing.assert_array_equal(result.as_numpy(datatype), array)
    for name, array in decode_response(buf).items():
        np.testing.assert_array_equal(array, ARRAYS[name])


def test_non_contiguous_and_empty_outputs():
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T
    empty = np.zeros((1, 0), np.float32)
    buf = encode_response(
        InferResponse(
            "m",
            "1",
            [
                InferOutput("t", "FP32", array.shape, array),
                InferOutput("e", "FP32", empty.shape, empty),
            ],
        )
    )
    decoded = decode_response(buf)
    np.testing.assert_array_equal(decoded["t"], array)
    assert decoded["e"].shape == (1, 0)


def test_client_side_encode_matches_server_side_decode():
    arrays = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": ARRAYS["BYTES"]}
    buf = encode_request(
        "m",
        arrays,
        ["y"],
        model_version="4",
        request_id="q",
        parameters={"timeout": 7, "s": "x", "f": 0.5},
    )
    request = decode_request(buf)
    assert (request.model_version, request.id, request.timeout_us) == ("4", "q", 7)
    assert request.parameters == {"timeout": 7, "s": "x", "f": 0.5}
    for tensor in request.inputs:
        np.testing.assert_array_equal(tensor.data, arrays[tensor.name])
    # tritonclient's parser reads the same bytes
    parsed = service_pb2.ModelInferRequest.FromString(buf)
    assert [bytes(r) for r in parsed.raw_input_contents][0] == arrays["a"].tobytes()


def test_stream_messages():
    inner = encode_response(InferResponse("m", "1", [], id="s1"))
    reply = service_pb2.ModelStreamInferResponse.FromString(stream_response(inner))
    assert reply.infer_response.id == "s1" and not reply.error_message
    error = service_pb2.ModelStreamInferResponse.FromString(stream_error("bad", "s2", "m"))
    assert error.error_message == "bad" and error.infer_response.id == "s2"


def test_statistics_json_fits_the_proto():
    stats = ModelStats("m", "1")
    timing = RequestTiming(0, 10, 20, 30, 40)
    stats.record_success(timing, 2, 50)
    stats.record_execution(2, 10, 10, 10)
    doc = {"model_stats": [stats.to_json()]}
    message = from_json(doc, service_pb2.ModelStatisticsResponse)
    (model,) = message.model_stats
    assert model.inference_stats.success.ns == 50 and model.batch_stats[0].batch_size == 2
    back = json_format.MessageToDict(message, preserving_proto_field_name=True)
    assert back["model_stats"][0]["inference_count"] == "2"  # uint64 as JSON strings


def test_unknown_fields_in_engine_documents_raise():
    with pytest.raises(json_format.ParseError):
        from_json({"name": "x", "surprise": 1}, service_pb2.ServerMetadataResponse)
