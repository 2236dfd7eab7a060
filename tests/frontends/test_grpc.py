"""What only gRPC has: raw messages, streams (sync and asyncio), methods left unimplemented."""

from __future__ import annotations

import queue
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from bertserve.server import Server
from tests.frontends.conftest import MAX_GRPC_MESSAGE, url
from tests.frontends.messages import RAW4, good, grpc_infer, grpc_request
from tests.frontends.protocols import Client, feed, inputs

_INVALID = "INVALID_ARGUMENT"
BAD_REQUESTS = [  # (case, serialized request, status code, text in the details)
    ("not protobuf", b"{nope", _INVALID, "not a valid ModelInferRequest"),
    ("truncated", grpc_request()[:-3], _INVALID, "not a valid ModelInferRequest"),
    ("no inputs", grpc_request([]), _INVALID,
     "expected 3 inputs but got 0 inputs for model 'tiny'. Got input(s) [], but missing "
     "required input(s) ['input_ids','attention_mask','token_type_ids']. Please provide all "
     "required input(s)."),
    ("unknown datatype", grpc_request([("input_ids", "I9", [1, 4], None)], raw=[RAW4]), _INVALID,
     "unknown datatype 'I9'"),
    ("element count", grpc_request(good(shape=[1, 5])), _INVALID,
     "has 4 elements but shape [1, 5] needs 5"),
    ("contents field", grpc_request(contents="int_contents"), _INVALID,
     "INT64 reads int64_contents"),
    ("raw size", grpc_request(good(shape=[1, 5], values=None), raw=[RAW4] * 3), _INVALID,
     "input byte size mismatch for input 'input_ids' for model 'tiny'. Expected 40, got 32"),
    ("raw count", grpc_request(good(values=None), raw=[RAW4] * 2), _INVALID,
     "unable to find data for input tensor 'token_type_ids' for model 'tiny' in request."),
    ("raw and contents", grpc_request(good(), raw=[RAW4] * 3), _INVALID,
     "contents field must not be specified when using raw_input_contents for 'input_ids'"),
    ("fp16 contents", grpc_request([("input_ids", "FP16", [1, 1], [1.0])]), _INVALID,
     "FP16 has no typed 'contents'"),
    ("negative shape", grpc_request(good(shape=[1, -4])), _INVALID, "non-negative"),
    ("datatype vs config", grpc_request(good(datatype="INT32")), _INVALID,
     "inference input 'input_ids' data-type is 'INT32', but model 'tiny' expects 'INT64'"),
    ("missing input", grpc_request(good()[:2]), _INVALID,
     "missing required input(s) ['token_type_ids']"),
    ("extra input", grpc_request([*good(), ("x", "INT64", [1, 4], [1, 2, 3, 4])]), _INVALID,
     "expected 3 inputs but got 4 inputs for model 'tiny'"),
    ("unknown input", grpc_request([*good()[:2], ("x", "INT64", [1, 4], [1, 2, 3, 4])]),
     _INVALID, "unexpected inference input 'x' for model 'tiny'"),
    ("batch above max", grpc_request(good(shape=[16, 1], values=[1] * 16)), _INVALID,
     "inference request batch-size must be <= 8 for 'tiny'"),
    ("rank", grpc_request(good(shape=[4])), _INVALID,
     "unexpected shape for input 'input_ids' for model 'tiny'. Expected [-1,-1], got [4]."),
    ("unknown output", grpc_request(outputs=[{"name": "nope"}]), _INVALID,
     "unexpected inference output 'nope' for model 'tiny'"),
    ("duplicate output", grpc_request(outputs=[{"name": "end_logits"}] * 2), _INVALID,
     "output 'end_logits' already exists in request"),
    ("unknown model", grpc_request(model_name="nope"), _INVALID,
     "Request for unknown model: 'nope' is not found"),
    ("unknown version", grpc_request(model_version="9"), "NOT_FOUND",
     "Request for unknown model: 'tiny' version 9 is not found"),
    ("too large", grpc_request(good(values=None), raw=[b"\0" * (MAX_GRPC_MESSAGE // 2)] * 3),
     "RESOURCE_EXHAUSTED", "--grpc-max-message-size"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "code", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_malformed_requests_get_clear_errors_and_server_keeps_serving(
    served: Server, grpc_client: Client, case, body, code, message
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(url(served, "grpc"), body)
    assert info.value.code().name == code, info.value.details()
    assert message in info.value.details()
    result = grpc_client.infer("tiny", grpc_client.inputs(feed()))
    assert result.as_numpy("start_logits").shape == (1, 16)


def test_unimplemented_methods_say_so(grpc_client: Client) -> None:
    with pytest.raises(InferenceServerException) as info:
        grpc_client.get_trace_settings()
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"


def _stream(client: Client) -> queue.Queue[tuple[Any, Any]]:
    replies: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    return replies


def test_stream_replies_out_of_order_with_their_ids(grpc_client: Client, http: Client) -> None:
    replies = _stream(grpc_client)
    try:
        slow, fast = feed(seed=11), feed(seed=12)
        grpc_client.async_stream_infer("slowbatch", grpc_client.inputs(slow), request_id="slow")
        grpc_client.async_stream_infer("tiny", grpc_client.inputs(fast), request_id="fast")
        got = [replies.get(timeout=30) for _ in range(2)]
    finally:
        grpc_client.stop_stream()
    assert all(error is None for _, error in got), got
    ids = [result.get_response().id for result, _ in got]
    assert ids == ["fast", "slow"]  # slowbatch waits 300 ms for a batch
    by_id = {result.get_response().id: result for result, _ in got}
    for request_id, data, model in (("slow", slow, "slowbatch"), ("fast", fast, "tiny")):
        expected = http.infer(model, http.inputs(data)).as_numpy("end_logits")
        np.testing.assert_array_equal(by_id[request_id].as_numpy("end_logits"), expected)


def test_stream_errors_travel_in_the_stream_and_it_stays_open(grpc_client: Client) -> None:
    replies = _stream(grpc_client)
    tensors = grpc_client.inputs
    try:
        grpc_client.async_stream_infer("tiny", tensors(feed())[:2], request_id="bad")
        _, error = replies.get(timeout=30)
        assert error is not None and "token_type_ids" in str(error)
        grpc_client.async_stream_infer("nope", tensors(feed()), request_id="unknown")
        _, error = replies.get(timeout=30)
        assert "Request for unknown model: 'nope' is not found" in str(error)
        for i in range(3):
            grpc_client.async_stream_infer("tiny", tensors(feed(seed=i)), request_id=f"ok{i}")
        got = [replies.get(timeout=30) for _ in range(3)]
    finally:
        grpc_client.stop_stream()
    assert sorted(r.get_response().id for r, e in got if e is None) == ["ok0", "ok1", "ok2"]


def test_stream_error_replies_name_their_request(served: Server) -> None:
    unknown_model = pb.ModelInferRequest(model_name="nope", id="who")
    unknown_model.inputs.add(name="input_ids", datatype="INT64", shape=[1, 1])
    unknown_model.raw_input_contents.append(b"\0" * 8)
    undecodable = pb.ModelInferRequest(model_name="tiny", id="what")
    undecodable.inputs.add(name="input_ids", datatype="INT64", shape=[1, 1])
    with grpc.insecure_channel(url(served, "grpc")) as channel:
        stub = grpcclient.service_pb2_grpc.GRPCInferenceServiceStub(channel)
        replies = list(stub.ModelStreamInfer(iter([unknown_model, undecodable])))
    errors = {r.infer_response.id: r.error_message for r in replies}
    assert "Request for unknown model: 'nope' is not found" in errors["who"]
    assert "unable to find data for input tensor 'input_ids' for model 'tiny'" in errors["what"]


async def test_asyncio_stream(served: Server, http: Client) -> None:
    client = aiogrpcclient.InferenceServerClient(url(served, "grpc"))
    datas = [feed(seed=20 + i) for i in range(6)]

    async def requests():
        for i, data in enumerate(datas):
            yield {
                "model_name": "tiny",
                "inputs": inputs(aiogrpcclient, data),
                "request_id": str(i),
            }

    got: dict[str, np.ndarray] = {}
    try:
        async for result, error in client.stream_infer(requests()):
            assert error is None, error
            got[result.get_response().id] = result.as_numpy("start_logits")
            if len(got) == len(datas):
                break
    finally:
        await client.close()
    for i, data in enumerate(datas):
        expected = http.infer("tiny", http.inputs(data)).as_numpy("start_logits")
        np.testing.assert_array_equal(got[str(i)], expected)
