"""Triton's protocol, each scenario once, run over HTTP and over gRPC (the `client` fixture)
against the server in this process; then what the two protocols must agree on."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from bertserve.server import Server
from tests.conftest import TINY, copy_model
from tests.frontends.conftest import BATCH2, running, settings, url
from tests.frontends.messages import RAW4, good, grpc_infer, grpc_request, json_body, post
from tests.frontends.protocols import INPUTS, OUTPUTS, Client, feed, reference


def test_health_and_server_metadata_list_what_perf_analyzer_needs(client: Client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    extensions = set(client.server_metadata().extensions)
    assert {"statistics", "binary_tensor_data", "model_repository"} <= extensions


def test_config_is_completed_from_the_model(client: Client) -> None:
    config = client.config("nobatch")
    assert [i.name for i in config.input] == list(INPUTS)
    assert list(config.input[0].dims) == [-1, -1]
    assert config.max_batch_size == 0
    completed = client.config("warm")
    assert [i.name for i in completed.input] == list(INPUTS)
    assert list(completed.input[0].dims) == [-1]
    meta = client.metadata("tiny")
    assert meta.inputs[0] == pb.ModelMetadataResponse.TensorMetadata(
        name="input_ids", datatype="INT64", shape=[-1, -1]
    )


def assert_not_ready(client: Client, model: str, why: str, version: str = "") -> None:
    """As tritonserver: what is not served is not ready, whatever the reason, and no error
    (Model Analyzer asks this of every model in the index). `why` documents the reason."""
    assert why and not client.is_model_ready(model, version)


def test_model_ready(client: Client) -> None:
    assert client.is_model_ready("tiny") and client.is_model_ready("versions", "2")
    assert client.is_model_ready("warm")  # its warm-up ran before it was marked ready
    assert_not_ready(client, "versions", "'versions' version 3 is not found", "3")
    assert_not_ready(client, "nope", "'nope' is not found")


def test_outputs_equal_onnxruntime_run_directly(client: Client, tiny_repo: Path) -> None:
    data = feed(batch=3, seq=24, seed=1)
    result = client.infer("tiny", client.inputs(data), request_id="req-7")
    for name, expected in zip(OUTPUTS, reference(tiny_repo, data), strict=True):
        np.testing.assert_allclose(result.as_numpy(name), expected, rtol=1e-5, atol=1e-5)
    response = client.response(result)
    assert response["id"] == "req-7" and response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == list(OUTPUTS)


def test_tensors_as_text_equal_raw_bytes(client: Client, tiny_repo: Path) -> None:
    data = feed(batch=2, seq=8, seed=3)
    text = client.infer_as_text("tiny", data, request_id="typed")
    raw = client.infer("tiny", client.inputs(data))
    assert client.response(text)["id"] == "typed"
    for name, expected in zip(OUTPUTS, reference(tiny_repo, data), strict=True):
        np.testing.assert_array_equal(text.as_numpy(name), raw.as_numpy(name))
        np.testing.assert_allclose(text.as_numpy(name), expected, rtol=1e-5, atol=1e-5)


def test_requested_output_subset(client: Client) -> None:
    requested = [client.module.InferRequestedOutput("end_logits")]
    result = client.infer("tiny", client.inputs(feed()), outputs=requested)
    assert [o["name"] for o in client.response(result)["outputs"]] == ["end_logits"]


def test_model_without_batch_axis(client: Client, tiny_repo: Path) -> None:
    data = feed(batch=2, seq=8)
    result = client.infer("nobatch", client.inputs(data))
    np.testing.assert_allclose(
        result.as_numpy("start_logits"), reference(tiny_repo, data)[0], rtol=1e-5, atol=1e-5
    )


def test_versions_and_unknown_version(client: Client) -> None:
    assert list(client.metadata("versions").versions) == ["1", "2"]
    for version in ("1", "2"):
        result = client.infer("versions", client.inputs(feed()), model_version=version)
        assert client.response(result)["model_version"] == version
    with pytest.raises(
        InferenceServerException, match="Request for unknown model: 'versions' version 3 is not"
    ) as info:
        client.infer("versions", client.inputs(feed()), model_version="3")
    assert info.value.status() == client.status(http=404, grpc="NOT_FOUND")


async def test_asyncio_client(client: Client, aio_client) -> None:
    datas = [feed(seed=i) for i in range(8)]
    results = await asyncio.gather(
        *[
            aio_client.infer("tiny", client.inputs(d), request_id=str(i))
            for i, d in enumerate(datas)
        ]
    )
    for i, (data, result) in enumerate(zip(datas, results, strict=True)):
        assert client.response(result)["id"] == str(i)
        assert result.as_numpy("start_logits").shape == (1, 16)
        alone = client.infer("tiny", client.inputs(data))  # blocks this loop, not the server's
        np.testing.assert_array_equal(
            result.as_numpy("start_logits"), alone.as_numpy("start_logits")
        )


def test_dynamic_batching_merges_concurrent_requests(client: Client, tiny_repo: Path) -> None:
    before = client.statistics("slowbatch").model_stats[0]
    sizes = [1, 2, 1, 4]  # a client sending its own batch (-b 4) combines with the others
    datas = [feed(batch=b, seed=i) for i, b in enumerate(sizes)]

    def one(data: dict[str, np.ndarray]) -> np.ndarray:
        with Client(client.protocol, client.url) as c:
            return c.infer("slowbatch", c.inputs(data)).as_numpy("start_logits")

    with ThreadPoolExecutor(len(sizes)) as pool:
        results = list(pool.map(one, datas))
    for data, got in zip(datas, results, strict=True):
        np.testing.assert_allclose(got, reference(tiny_repo, data)[0], rtol=1e-5, atol=1e-5)
    after = client.statistics("slowbatch").model_stats[0]
    assert after.inference_count - before.inference_count == 8
    assert after.execution_count - before.execution_count < len(sizes), "nothing was merged"
    assert any(b.batch_size > 4 for b in after.batch_stats)


def test_statistics(client: Client) -> None:
    client.infer("tiny", client.inputs(feed()))
    stats = client.statistics("tiny").model_stats[0]
    infer = stats.inference_stats
    assert infer.success.count >= 1 and infer.compute_infer.ns > 0
    counts = {infer.compute_input.count, infer.compute_infer.count, infer.compute_output.count}
    assert len(counts) == 1  # perf_analyzer aborts when these differ
    assert stats.batch_stats[0].compute_infer.count >= 1
    assert len(client.statistics().model_stats) >= 6  # every model's, unnamed


def test_queue_full_is_a_clear_error_and_nothing_is_lost(client: Client) -> None:
    data = feed(batch=8, seq=256)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        with Client(client.protocol, client.url) as c:
            try:
                c.infer("queue1", c.inputs(data))
                result = "ok"
            except InferenceServerException as exc:
                result = f"{exc.status()} {exc.message()}"
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(48)))
    refused = [o for o in outcomes if o != "ok"]
    assert refused, "max_queue_size 1 never refused anything"
    unavailable = client.status(http=503, grpc="UNAVAILABLE")
    assert all(o.startswith(unavailable) and "queue is full" in o for o in refused), refused[:3]
    assert outcomes.count("ok") + len(refused) == 48
    assert outcomes.count("ok") >= 2


def test_load_refused_outside_explicit_mode(client: Client) -> None:
    with pytest.raises(InferenceServerException, match="--model-control-mode explicit") as info:
        client.load_model("tiny")
    assert info.value.status() == client.status(http=501, grpc="UNIMPLEMENTED")


def test_repository_index(client: Client) -> None:
    row = pb.RepositoryIndexResponse.ModelIndex(name="tiny", version="1", state="READY")
    assert row in client.index().models


def test_prometheus_metrics_with_triton_names(client: Client, served: Server) -> None:
    client.infer("tiny", client.inputs(feed()))
    text = urllib.request.urlopen(f"http://{url(served, 'metrics')}/metrics").read().decode()
    names = """request_success request_failure count exec_count request_duration_us
    queue_duration_us compute_input_duration_us compute_infer_duration_us
    compute_output_duration_us"""
    for name in (f"nv_inference_{n}" for n in names.split()):
        assert f'{name}{{model="tiny",' in text or f'{name}{{model="tiny"' in text, name
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('nv_inference_request_success{model="tiny",version="1"}')
    )
    assert float(line.split()[-1]) >= 1


# -- both protocols on one server give the same answers, and their requests batch together ---


def test_agree_on_server_metadata(grpc_client: Client, http: Client) -> None:
    assert grpc_client.get_server_metadata(as_json=True) == http.get_server_metadata()
    assert grpc_client.server_metadata() == http.server_metadata()


def test_agree_on_model_metadata_and_config(grpc_client: Client, http: Client) -> None:
    for model in ("tiny", "nobatch", "versions"):
        assert grpc_client.metadata(model) == http.metadata(model)
        assert grpc_client.config(model) == http.config(model)


def test_agree_on_outputs(grpc_client: Client, http: Client) -> None:
    data = feed(batch=3, seq=24, seed=1)
    over_grpc = grpc_client.infer("tiny", grpc_client.inputs(data))
    over_http = http.infer("tiny", http.inputs(data))
    for name in OUTPUTS:
        np.testing.assert_array_equal(over_grpc.as_numpy(name), over_http.as_numpy(name))


def test_agree_on_statistics(grpc_client: Client, http: Client) -> None:
    grpc_client.infer("tiny", grpc_client.inputs(feed()))
    assert grpc_client.statistics("tiny") == http.statistics("tiny")
    assert grpc_client.statistics() == http.statistics()


def test_agree_on_repository_index(grpc_client: Client, http: Client) -> None:
    assert grpc_client.index() == http.index()


def test_grpc_and_http_requests_batch_together(
    served: Server, grpc_client: Client, tiny_repo: Path
) -> None:
    before = grpc_client.statistics("slowbatch").model_stats[0]
    datas = [feed(batch=b, seed=i) for i, b in enumerate([1, 2, 1, 2])]

    def one(args: tuple[int, dict[str, np.ndarray]]) -> np.ndarray:
        i, data = args
        protocol = "http" if i % 2 else "grpc"
        with Client(protocol, url(served, protocol)) as c:
            return c.infer("slowbatch", c.inputs(data)).as_numpy("start_logits")

    with ThreadPoolExecutor(len(datas)) as pool:
        results = list(pool.map(one, enumerate(datas)))
    for data, got in zip(datas, results, strict=True):
        np.testing.assert_allclose(got, reference(tiny_repo, data)[0], rtol=1e-5, atol=1e-5)
    after = grpc_client.statistics("slowbatch").model_stats[0]
    assert after.inference_count - before.inference_count == 6
    assert after.execution_count - before.execution_count < len(datas), "nothing was merged"


# The same mistakes sent as JSON over HTTP and as typed contents over gRPC: the engine finds
# them, so both front ends must answer with the very same message.
SAME_MESSAGE = {
    "datatype vs config": good(datatype="INT32"),
    "missing input": good()[:2],
    "extra input": [*good(), ("x", "INT64", [1, 4], [1, 2, 3, 4])],
    "batch above max": good(shape=[16, 1], values=[1] * 16),
    "rank": good(shape=[4]),
    "element count": good(shape=[1, 5]),
    "unknown datatype": [("input_ids", "I9", [1, 4], None)],
}


@pytest.mark.parametrize("case", list(SAME_MESSAGE))
def test_http_and_grpc_fail_with_the_same_message(served: Server, case: str) -> None:
    tensors = SAME_MESSAGE[case]
    _, payload, _ = post(url(served, "http"), "/v2/models/tiny/infer", json_body(tensors))
    raw = [RAW4] if case == "unknown datatype" else None
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(url(served, "grpc"), grpc_request(tensors, raw=raw))
    assert info.value.details() == orjson.loads(payload)["error"]


# -- servers of their own ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_broken(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("broken") / "repo"
    copy_model(tiny_repo, TINY, repo, "good", BATCH2)
    wrong_output = 'output { name: "start_logits" data_type: TYPE_INT8 dims: [-1] }\n'
    copy_model(tiny_repo, TINY, repo, "broken", BATCH2 + wrong_output)
    with running(settings(repo, exit_on_error=False)) as server:
        yield server


def test_broken_model_is_unavailable_and_does_not_stop_the_others(
    with_broken: Server, protocol: str
) -> None:
    with Client(protocol, url(with_broken, protocol)) as client:
        index = {row.name: row for row in client.index().models}
        assert index["broken"].state == "UNAVAILABLE" and "datatype" in index["broken"].reason
        assert client.is_model_ready("good")
        assert_not_ready(client, "broken", "no available versions")
        assert not client.is_server_ready()  # strict readiness, as tritonserver
        with pytest.raises(InferenceServerException, match="no available versions") as info:
            client.infer("broken", client.inputs(feed()))
        assert info.value.status() == client.status(http=404, grpc="NOT_FOUND")
        client.infer("good", client.inputs(feed()))


def test_explicit_load_with_config_override_and_unload(
    tiny_repo: Path, tmp_path: Path, protocol: str
) -> None:
    repo = tmp_path / "repo"
    copy_model(tiny_repo, TINY, repo, "m", BATCH2)
    with (
        running(settings(repo, model_control_mode="explicit")) as server,
        Client(protocol, url(server, protocol)) as client,
    ):
        assert client.index() == pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(name="m")]
        )
        if client.protocol == "http":  # the JSON names only what is known
            assert client.get_model_repository_index() == [{"name": "m"}]
        assert_not_ready(client, "m", "'m' is not found")
        client.load_model(
            "m",
            config=orjson.dumps(
                {"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 100}}
            ).decode(),
        )
        assert client.config("m").max_batch_size == 4
        client.infer("m", client.inputs(feed(batch=4)))
        client.unload_model("m")
        assert_not_ready(client, "m", "'m' has no available versions")
        with pytest.raises(InferenceServerException, match="no available versions"):
            client.infer("m", client.inputs(feed()))
        with pytest.raises(InferenceServerException, match="preferred size must be <= max batch"):
            client.load_model(
                "m",
                config='{"max_batch_size": 2, "dynamic_batching": {"preferred_batch_size": [9]}}',
            )
        with pytest.raises(InferenceServerException, match="not valid JSON") as info:
            client.load_model("m", config="{nope")
        assert info.value.status() == client.status(http=400, grpc="INVALID_ARGUMENT")
        with pytest.raises(InferenceServerException, match="model files") as info:
            client.load_model("m", files={"file:1/model.onnx": b"x"})
        assert info.value.status() == client.status(http=501, grpc="UNIMPLEMENTED")
        with pytest.raises(
            InferenceServerException, match="failed to load 'zz', failed to poll from model"
        ) as info:
            client.load_model("zz")
        assert info.value.status() == client.status(http=400, grpc="INVALID_ARGUMENT")
        client.load_model("m")
        assert client.is_model_ready("m")
        assert client.config("m").max_batch_size == 2  # the override is gone


def test_poll_mode_picks_up_added_and_removed_models(
    tiny_repo: Path, tmp_path: Path, protocol: str
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    config = settings(repo, model_control_mode="poll", repository_poll_secs=0.3)
    with running(config) as server, Client(protocol, url(server, protocol)) as client:
        copy_model(tiny_repo, TINY, repo, "late", BATCH2)
        deadline = time.monotonic() + 30
        while not client.is_model_ready("late") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.is_model_ready("late")
        client.infer("late", client.inputs(feed()))
        shutil.rmtree(repo / "late")
        while client.index().models and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.index() == pb.RepositoryIndexResponse()
