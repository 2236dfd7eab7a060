"""The real server over gRPC, driven by tritonclient (sync, asyncio, streams) and by a raw
channel for malformed requests; answers are compared with the same server's HTTP answers."""

from __future__ import annotations

import asyncio
import queue
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

from tests.conftest import TINY, ServerProcess, copy_model, start_server
from tests.e2e.test_http_server import INPUTS, feed, make_repo, reference

pytestmark = pytest.mark.e2e

OUTPUTS = ("start_logits", "end_logits")
MAX_MESSAGE = 1024 * 1024


@pytest.fixture(scope="module")
def srv(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    repo = make_repo(tiny_repo, tmp_path_factory.mktemp("grpc_e2e"))
    server = start_server(repo, extra=["--grpc-max-message-size", str(MAX_MESSAGE)])
    yield server
    assert server.stop() == 0


@pytest.fixture()
def client(srv: ServerProcess):
    c = grpcclient.InferenceServerClient(srv.grpc_url)
    yield c
    c.close()


@pytest.fixture()
def http(srv: ServerProcess):
    c = httpclient.InferenceServerClient(srv.http_url)
    yield c
    c.close()


def grpc_inputs(data: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    out = []
    for name, array in data.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def http_inputs(data: dict[str, np.ndarray]) -> list[httpclient.InferInput]:
    out = []
    for name, array in data.items():
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def test_health_and_server_metadata(client, http):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta == http.get_server_metadata()


def test_model_metadata_and_config_equal_http(client, http):
    for model in ("tiny", "nobatch", "versions"):
        grpc_meta = client.get_model_metadata(model)
        assert grpc_meta == json_format.ParseDict(
            http.get_model_metadata(model), service_pb2.ModelMetadataResponse()
        )
        grpc_config = client.get_model_config(model).config
        assert grpc_config == json_format.ParseDict(
            http.get_model_config(model), model_config_pb2.ModelConfig()
        )
    assert client.get_model_config("nobatch").config.max_batch_size == 0


def test_model_ready(client):
    assert client.is_model_ready("tiny") and client.is_model_ready("versions", "2")
    assert client.is_model_ready("warm")
    assert not client.is_model_ready("versions", "3")
    assert not client.is_model_ready("nope")  # as tritonserver: not ready, no error


def test_outputs_equal_http_and_onnxruntime(client, http, tiny_repo):
    data = feed(batch=3, seq=24, seed=1)
    result = client.infer("tiny", grpc_inputs(data), request_id="req-7")
    over_http = http.infer("tiny", http_inputs(data))
    start, end = reference(tiny_repo, data)
    for name, expected in zip(OUTPUTS, (start, end), strict=True):
        np.testing.assert_array_equal(result.as_numpy(name), over_http.as_numpy(name))
        np.testing.assert_allclose(result.as_numpy(name), expected, rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response.id == "req-7" and response.model_version == "1"
    assert [o.name for o in response.outputs] == list(OUTPUTS)


def test_typed_contents_equal_raw(srv, client):
    data = feed(batch=2, seq=8, seed=3)
    request = service_pb2.ModelInferRequest(model_name="tiny", id="typed")
    for name, array in data.items():
        tensor = request.inputs.add(name=name, datatype="INT64", shape=array.shape)
        tensor.contents.int64_contents.extend(array.reshape(-1).tolist())
    with grpc.insecure_channel(srv.grpc_url) as channel:
        stub = grpcclient.service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request)
    typed = grpcclient.InferResult(response)
    raw = client.infer("tiny", grpc_inputs(data))
    assert response.id == "typed"
    for name in OUTPUTS:
        np.testing.assert_array_equal(typed.as_numpy(name), raw.as_numpy(name))


def test_requested_output_subset(client):
    result = client.infer(
        "tiny", grpc_inputs(feed()), outputs=[grpcclient.InferRequestedOutput("end_logits")]
    )
    assert [o.name for o in result.get_response().outputs] == ["end_logits"]


def test_model_without_batch_axis(client, tiny_repo):
    data = feed(batch=2, seq=8)
    result = client.infer("nobatch", grpc_inputs(data))
    np.testing.assert_allclose(
        result.as_numpy("start_logits"), reference(tiny_repo, data)[0], rtol=1e-5, atol=1e-5
    )


def test_versions_and_unknown_version(client):
    assert client.get_model_metadata("versions").versions == ["1", "2"]
    for version in ("1", "2"):
        result = client.infer("versions", grpc_inputs(feed()), model_version=version)
        assert result.get_response().model_version == version
    with pytest.raises(InferenceServerException, match="no version 3") as info:
        client.infer("versions", grpc_inputs(feed()), model_version="3")
    assert info.value.status() == "StatusCode.NOT_FOUND"


async def test_asyncio_client(srv, http):
    client = aiogrpcclient.InferenceServerClient(srv.grpc_url)
    try:
        datas = [feed(seed=i) for i in range(8)]
        results = await asyncio.gather(
            *[client.infer("tiny", grpc_inputs(d), request_id=str(i)) for i, d in enumerate(datas)]
        )
        for i, (data, result) in enumerate(zip(datas, results, strict=True)):
            assert result.get_response().id == str(i)
            expected = http.infer("tiny", http_inputs(data)).as_numpy("start_logits")
            np.testing.assert_array_equal(result.as_numpy("start_logits"), expected)
    finally:
        await client.close()


def _stream(client) -> queue.Queue[tuple[Any, Any]]:
    replies: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    return replies


def test_stream_replies_out_of_order_with_their_ids(srv, http):
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    replies = _stream(client)
    try:
        slow, fast = feed(seed=11), feed(seed=12)
        client.async_stream_infer("slowbatch", grpc_inputs(slow), request_id="slow")
        client.async_stream_infer("tiny", grpc_inputs(fast), request_id="fast")
        got = [replies.get(timeout=30) for _ in range(2)]
    finally:
        client.stop_stream()
        client.close()
    assert all(error is None for _, error in got), got
    ids = [result.get_response().id for result, _ in got]
    assert ids == ["fast", "slow"]  # slowbatch waits 300 ms for a batch
    by_id = {result.get_response().id: result for result, _ in got}
    for request_id, data, model in (("slow", slow, "slowbatch"), ("fast", fast, "tiny")):
        expected = http.infer(model, http_inputs(data)).as_numpy("end_logits")
        np.testing.assert_array_equal(by_id[request_id].as_numpy("end_logits"), expected)


def test_stream_errors_travel_in_the_stream_and_it_stays_open(srv):
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    replies = _stream(client)
    try:
        client.async_stream_infer("tiny", grpc_inputs(feed())[:2], request_id="bad")
        _, error = replies.get(timeout=30)
        assert error is not None and "token_type_ids" in str(error)
        client.async_stream_infer("nope", grpc_inputs(feed()), request_id="unknown")
        _, error = replies.get(timeout=30)
        assert "unknown model 'nope'" in str(error)
        for i in range(3):
            client.async_stream_infer("tiny", grpc_inputs(feed(seed=i)), request_id=f"ok{i}")
        got = [replies.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
        client.close()
    assert sorted(r.get_response().id for r, e in got if e is None) == ["ok0", "ok1", "ok2"]


def test_stream_error_replies_name_their_request(srv):
    unknown_model = service_pb2.ModelInferRequest(model_name="nope", id="who")
    unknown_model.inputs.add(name="input_ids", datatype="INT64", shape=[1, 1])
    unknown_model.raw_input_contents.append(b"\0" * 8)
    undecodable = service_pb2.ModelInferRequest(model_name="tiny", id="what")
    undecodable.inputs.add(name="input_ids", datatype="INT64", shape=[1, 1])
    with grpc.insecure_channel(srv.grpc_url) as channel:
        stub = grpcclient.service_pb2_grpc.GRPCInferenceServiceStub(channel)
        replies = list(stub.ModelStreamInfer(iter([unknown_model, undecodable])))
    errors = {r.infer_response.id: r.error_message for r in replies}
    assert "unknown model 'nope'" in errors["who"]
    assert "has 0 elements but shape [1, 1] needs 1" in errors["what"]


async def test_asyncio_stream(srv, http):
    client = aiogrpcclient.InferenceServerClient(srv.grpc_url)
    datas = [feed(seed=20 + i) for i in range(6)]

    async def requests():
        for i, data in enumerate(datas):
            yield {"model_name": "tiny", "inputs": grpc_inputs(data), "request_id": str(i)}

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
        expected = http.infer("tiny", http_inputs(data)).as_numpy("start_logits")
        np.testing.assert_array_equal(got[str(i)], expected)


def _stats(client, model: str) -> service_pb2.ModelStatistics:
    return client.get_inference_statistics(model).model_stats[0]


def test_statistics_equal_http(client, http):
    client.infer("tiny", grpc_inputs(feed()))
    over_http = json_format.ParseDict(
        {"model_stats": http.get_inference_statistics("tiny")["model_stats"]},
        service_pb2.ModelStatisticsResponse(),
    )
    assert client.get_inference_statistics("tiny") == over_http
    stats = over_http.model_stats[0]
    assert stats.inference_stats.success.count >= 1
    assert stats.inference_stats.compute_infer.ns > 0
    assert len(client.get_inference_statistics().model_stats) >= 6


def test_grpc_and_http_requests_batch_together(srv, tiny_repo):
    grpc_client = grpcclient.InferenceServerClient(srv.grpc_url)
    before = _stats(grpc_client, "slowbatch")
    datas = [feed(batch=b, seed=i) for i, b in enumerate([1, 2, 1, 2])]

    def one(args):
        i, data = args
        if i % 2:
            c = httpclient.InferenceServerClient(srv.http_url)
            return c.infer("slowbatch", http_inputs(data)).as_numpy("start_logits")
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        return c.infer("slowbatch", grpc_inputs(data)).as_numpy("start_logits")

    with ThreadPoolExecutor(len(datas)) as pool:
        results = list(pool.map(one, enumerate(datas)))
    for data, got in zip(datas, results, strict=True):
        np.testing.assert_allclose(got, reference(tiny_repo, data)[0], rtol=1e-5, atol=1e-5)
    after = _stats(grpc_client, "slowbatch")
    assert after.inference_count - before.inference_count == 6
    assert after.execution_count - before.execution_count < len(datas), "nothing was merged"


def test_queue_full_is_unavailable(srv):
    data = feed(batch=8, seq=256)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(_):
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            c.infer("queue1", grpc_inputs(data))
            result = "ok"
        except InferenceServerException as exc:
            result = f"{exc.status()} {exc.message()}"
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(48)))
    refused = [o for o in outcomes if o != "ok"]
    assert refused, "max_queue_size 1 never refused anything"
    assert all(o.startswith("StatusCode.UNAVAILABLE") and "queue is full" in o for o in refused), (
        refused[:3]
    )
    assert outcomes.count("ok") >= 2


# -- malformed requests -----------------------------------------------------------------------


def _request(tensors=None, raw: list[bytes] | None = None, **fields) -> bytes:
    """A ModelInferRequest for model 'tiny': tensors as (name, datatype, shape, values) with
    typed contents, or raw bytes per input."""
    request = service_pb2.ModelInferRequest(**{"model_name": "tiny", **fields})
    if tensors is None:
        tensors = [(n, "INT64", [1, 4], [1, 2, 3, 4]) for n in INPUTS]
    for name, datatype, shape, values in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if values is not None:
            field = {"INT64": "int64_contents", "INT32": "int_contents", "FP16": "fp32_contents"}[
                datatype
            ]
            getattr(tensor.contents, field).extend(values)
    request.raw_input_contents.extend(raw or [])
    return request.SerializeToString()


def _good(**change) -> list[tuple[str, str, list[int], list[int] | None]]:
    return [
        (
            n,
            change.get("datatype", "INT64"),
            change.get("shape", [1, 4]),
            change.get("values", [1, 2, 3, 4]),
        )
        for n in INPUTS
    ]


def _wrong_field() -> bytes:
    request = service_pb2.ModelInferRequest(model_name="tiny")
    for name in INPUTS:
        tensor = request.inputs.add(name=name, datatype="INT64", shape=[1, 4])
        tensor.contents.int_contents.extend([1, 2, 3, 4])
    return request.SerializeToString()


_RAW4 = np.arange(4, dtype=np.int64).tobytes()
BAD_REQUESTS = [
    ("not protobuf", b"{nope", "INVALID_ARGUMENT", "not a valid ModelInferRequest"),
    ("truncated", _request()[:-3], "INVALID_ARGUMENT", "not a valid ModelInferRequest"),
    ("no inputs", _request([]), "INVALID_ARGUMENT", "non-empty 'inputs'"),
    (
        "unknown datatype",
        _request([("input_ids", "I9", [1, 4], None)], raw=[_RAW4]),
        "INVALID_ARGUMENT",
        "unknown datatype 'I9'",
    ),
    (
        "element count",
        _request(_good(shape=[1, 5])),
        "INVALID_ARGUMENT",
        "has 4 elements but shape [1, 5] needs 5",
    ),
    ("contents field", _wrong_field(), "INVALID_ARGUMENT", "INT64 reads int64_contents"),
    (
        "raw size",
        _request(_good(shape=[1, 5], values=None), raw=[_RAW4] * 3),
        "INVALID_ARGUMENT",
        "raw_input_contents holds 32 bytes but shape [1, 5] of INT64 needs 40",
    ),
    (
        "raw count",
        _request(_good(values=None), raw=[_RAW4] * 2),
        "INVALID_ARGUMENT",
        "2 raw_input_contents for 3 inputs",
    ),
    ("raw and contents", _request(_good(), raw=[_RAW4] * 3), "INVALID_ARGUMENT", "use one form"),
    (
        "fp16 contents",
        _request([("input_ids", "FP16", [1, 1], [1.0])]),
        "INVALID_ARGUMENT",
        "FP16 has no typed 'contents'",
    ),
    ("negative shape", _request(_good(shape=[1, -4])), "INVALID_ARGUMENT", "non-negative"),
    ("datatype vs config", _request(_good(datatype="INT32")), "INVALID_ARGUMENT", "expects INT64"),
    ("missing input", _request(_good()[:2]), "INVALID_ARGUMENT", "token_type_ids"),
    (
        "extra input",
        _request([*_good(), ("x", "INT64", [1, 4], [1, 2, 3, 4])]),
        "INVALID_ARGUMENT",
        "unexpected inference input 'x'",
    ),
    (
        "batch above max",
        _request(_good(shape=[16, 1], values=[1] * 16)),
        "INVALID_ARGUMENT",
        "max_batch_size",
    ),
    ("rank", _request(_good(shape=[4])), "INVALID_ARGUMENT", "expects [batch]"),
    (
        "unknown output",
        _request(outputs=[{"name": "nope"}]),
        "INVALID_ARGUMENT",
        "unknown requested output 'nope'",
    ),
    (
        "classification",
        _request(
            outputs=[{"name": "start_logits", "parameters": {"classification": {"int64_param": 2}}}]
        ),
        "INVALID_ARGUMENT",
        "classification extension",
    ),
    ("unknown model", _request(model_name="nope"), "NOT_FOUND", "unknown model 'nope'"),
    ("unknown version", _request(model_version="9"), "NOT_FOUND", "no version 9"),
    (
        "too large",
        _request(_good(values=None), raw=[b"\0" * (MAX_MESSAGE // 2)] * 3),
        "RESOURCE_EXHAUSTED",
        "--grpc-max-message-size",
    ),
]


def _raw_infer(srv: ServerProcess, body: bytes) -> bytes:
    with grpc.insecure_channel(srv.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        return call(body, timeout=30)


@pytest.mark.parametrize(
    ("case", "body", "code", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_malformed_requests_get_clear_errors_and_server_keeps_serving(
    srv, client, case, body, code, message
):
    with pytest.raises(grpc.RpcError) as info:
        _raw_infer(srv, body)
    assert info.value.code().name == code, info.value.details()
    assert message in info.value.details()
    assert client.infer("tiny", grpc_inputs(feed())).as_numpy("start_logits").shape == (1, 16)


# The same mistakes sent as JSON over HTTP and as typed contents over gRPC: the engine finds
# them, so both front ends must answer with the very same message.
SAME_MESSAGE = {
    "datatype vs config": _good(datatype="INT32"),
    "missing input": _good()[:2],
    "extra input": [*_good(), ("x", "INT64", [1, 4], [1, 2, 3, 4])],
    "batch above max": _good(shape=[16, 1], values=[1] * 16),
    "rank": _good(shape=[4]),
    "element count": _good(shape=[1, 5]),
    "unknown datatype": [("input_ids", "I9", [1, 4], None)],
}


@pytest.mark.parametrize("case", list(SAME_MESSAGE))
def test_http_and_grpc_fail_with_the_same_message(srv, case):
    import http.client

    tensors = SAME_MESSAGE[case]
    doc = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "data": v or [1, 2, 3, 4]}
            for n, d, s, v in tensors
        ]
    }
    host, port = srv.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/v2/models/tiny/infer", body=orjson.dumps(doc))
    http_message = orjson.loads(conn.getresponse().read())["error"]
    conn.close()
    raw = [_RAW4] if case == "unknown datatype" else None
    with pytest.raises(grpc.RpcError) as info:
        _raw_infer(srv, _request(tensors, raw=raw))
    assert info.value.details() == http_message


def test_load_refused_outside_explicit_mode(client):
    with pytest.raises(InferenceServerException, match="--model-control-mode explicit") as info:
        client.load_model("tiny")
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"


def test_repository_index(client, http):
    index = client.get_model_repository_index()
    assert index == json_format.ParseDict(
        {"models": http.get_model_repository_index()}, service_pb2.RepositoryIndexResponse()
    )
    row = service_pb2.RepositoryIndexResponse.ModelIndex(name="tiny", version="1", state="READY")
    assert row in index.models


def test_unimplemented_methods_say_so(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_system_shared_memory_status()
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"


# -- servers of their own ---------------------------------------------------------------------


def test_broken_model_is_unavailable_and_does_not_stop_the_others(tiny_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo / TINY, repo / "good")
    (repo / "good" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 2')
    copy_model(
        tiny_repo,
        TINY,
        repo,
        "broken",
        'platform: "onnxruntime_onnx"\nmax_batch_size: 2\n'
        'output { name: "start_logits" data_type: TYPE_INT8 dims: [-1] }\n',
    )
    server = start_server(repo)
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        index = {row.name: row for row in client.get_model_repository_index().models}
        assert index["broken"].state == "UNAVAILABLE" and "data_type" in index["broken"].reason
        assert client.is_model_ready("good") and not client.is_model_ready("broken")
        assert not client.is_server_ready()
        with pytest.raises(InferenceServerException, match="not ready") as info:
            client.infer("broken", grpc_inputs(feed()))
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        client.infer("good", grpc_inputs(feed()))
    finally:
        assert server.stop() == 0


def test_explicit_load_with_config_override_and_unload(tiny_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo / TINY, repo / "m")
    (repo / "m" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 2')
    server = start_server(repo, extra=["--model-control-mode", "explicit"])
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.get_model_repository_index(as_json=True) == {"models": [{"name": "m"}]}
        assert not client.is_model_ready("m")
        client.load_model(
            "m",
            config=orjson.dumps(
                {"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 100}}
            ).decode(),
        )
        assert client.get_model_config("m").config.max_batch_size == 4
        client.infer("m", grpc_inputs(feed(batch=4)))
        client.unload_model("m")
        assert not client.is_model_ready("m")
        with pytest.raises(InferenceServerException, match="not ready"):
            client.infer("m", grpc_inputs(feed()))
        with pytest.raises(InferenceServerException, match="max_batch_size"):
            client.load_model(
                "m",
                config='{"max_batch_size": 2, "dynamic_batching": {"preferred_batch_size": [9]}}',
            )
        with pytest.raises(InferenceServerException, match="not valid JSON") as info:
            client.load_model("m", config="{nope")
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(InferenceServerException, match="model files") as info:
            client.load_model("m", files={"file:1/model.onnx": b"x"})
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"
        with pytest.raises(InferenceServerException, match="no model 'zz'") as info:
            client.load_model("zz")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        client.load_model("m")
        assert client.is_model_ready("m")
    finally:
        assert server.stop() == 0


def test_graceful_shutdown_finishes_requests_in_flight(tiny_repo, tmp_path):
    repo = tmp_path / "repo"
    copy_model(
        tiny_repo,
        TINY,
        repo,
        "slow",
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        "dynamic_batching { max_queue_delay_microseconds: 1500000 }\n",
    )
    server = start_server(repo)
    results: list[object] = []

    def one(i):
        c = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            result = c.infer("slow", grpc_inputs(feed(seed=i)), client_timeout=60)
            results.append(result.as_numpy("start_logits").shape)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on
            results.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # requests are waiting in the 1.5 s batching window
    assert server.stop() == 0
    for t in threads:
        t.join(30)
    assert results == [(1, 16)] * 6, results
    assert "bertserve stopped" in server.output()
