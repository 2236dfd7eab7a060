"""The real server over HTTP, driven by tritonclient and by raw HTTP for malformed requests."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import TINY, ServerProcess, copy_model, start_server

pytestmark = pytest.mark.e2e

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CONFIGS = {
    "tiny": None,  # as built
    "slowbatch": 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    "dynamic_batching { max_queue_delay_microseconds: 300000 }\n",
    "queue1": 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    "dynamic_batching { default_queue_policy { max_queue_size: 1 } }\n",
    "nobatch": 'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n',
    "warm": 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
    'model_warmup { name: "w" batch_size: 2 count: 2\n'
    '  inputs { key: "input_ids" value { data_type: TYPE_INT64 dims: [16]\n'
    "    zero_data: true } }\n"
    '  inputs { key: "attention_mask" value { data_type: TYPE_INT64 dims: [16]\n'
    "    random_data: true } }\n"
    '  inputs { key: "token_type_ids" value { data_type: TYPE_INT64 dims: [16]\n'
    "    zero_data: true } }\n"
    "}\n",
}


def make_repo(tiny_repo: Path, root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    for name, config in CONFIGS.items():
        if config is None:
            shutil.copytree(tiny_repo / TINY, repo / name)
            (repo / name / "config.pbtxt").write_text(
                (tiny_repo / TINY / "config.pbtxt").read_text().replace(TINY, name)
            )
        else:
            copy_model(tiny_repo, TINY, repo, name, config)
    versions = copy_model(
        tiny_repo,
        TINY,
        repo,
        "versions",
        'platform: "onnxruntime_onnx"\nmax_batch_size: 4\nversion_policy { all {} }\n',
    )
    shutil.copytree(versions / "1", versions / "2")
    return repo


@pytest.fixture(scope="module")
def srv(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    repo = make_repo(tiny_repo, tmp_path_factory.mktemp("e2e"))
    server = start_server(repo, extra=["--http-max-input-size", "1048576"])
    yield server
    assert server.stop() == 0


@contextlib.contextmanager
def http_client(url: str, **options: object) -> Iterator[httpclient.InferenceServerClient]:
    """A tritonclient HTTP client that is closed after use (its __del__ warns otherwise)."""
    c = httpclient.InferenceServerClient(url, **options)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture()
def client(srv: ServerProcess):
    c = httpclient.InferenceServerClient(srv.http_url, concurrency=8)
    yield c
    c.close()


def feed(batch: int = 1, seq: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(0, 100, (batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), np.int64),
        "token_type_ids": (np.arange(seq) >= seq // 2).astype(np.int64)[None].repeat(batch, 0),
    }


def inputs(data: dict[str, np.ndarray], binary: bool = True) -> list[httpclient.InferInput]:
    out = []
    for name, array in data.items():
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array, binary_data=binary)
        out.append(tensor)
    return out


def reference(tiny_repo: Path, data: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(tiny_repo / TINY / "1" / "model.onnx"))
    return session.run(["start_logits", "end_logits"], data)


def test_server_metadata_lists_what_perf_analyzer_needs(client):
    meta = client.get_server_metadata()
    assert {"statistics", "binary_tensor_data", "model_repository"} <= set(meta["extensions"])
    assert client.is_server_live() and client.is_server_ready()


def test_config_completed_from_the_model_and_served_as_numbers(client):
    config = client.get_model_config("nobatch")
    assert [i["name"] for i in config["input"]] == list(INPUTS)
    assert config["input"][0]["dims"] == [-1, -1]
    assert config["max_batch_size"] == 0
    meta = client.get_model_metadata("tiny")
    assert meta["inputs"][0] == {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}


@pytest.mark.parametrize("binary", [True, False])
def test_outputs_equal_onnxruntime_run_directly(client, tiny_repo, binary):
    data = feed(batch=3, seq=24, seed=1)
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=binary)
        for n in ("start_logits", "end_logits")
    ]
    result = client.infer("tiny", inputs(data, binary), outputs=outputs, request_id="req-7")
    start, end = reference(tiny_repo, data)
    np.testing.assert_allclose(result.as_numpy("start_logits"), start, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("end_logits"), end, rtol=1e-5, atol=1e-5)
    assert result.get_response()["id"] == "req-7"


def test_requested_output_subset(client):
    result = client.infer(
        "tiny", inputs(feed()), outputs=[httpclient.InferRequestedOutput("end_logits")]
    )
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["end_logits"]


def test_model_without_batch_axis(client, tiny_repo):
    data = feed(batch=2, seq=8)
    result = client.infer("nobatch", inputs(data))
    np.testing.assert_allclose(
        result.as_numpy("start_logits"), reference(tiny_repo, data)[0], rtol=1e-5, atol=1e-5
    )


def test_versions_and_unknown_version(client):
    assert client.get_model_metadata("versions")["versions"] == ["1", "2"]
    for version in ("1", "2"):
        result = client.infer("versions", inputs(feed()), model_version=version)
        assert result.get_response()["model_version"] == version
    with pytest.raises(InferenceServerException, match="no version 3"):
        client.infer("versions", inputs(feed()), model_version="3")


def test_warmup_model_is_ready(client):
    assert client.is_model_ready("warm")


async def test_asyncio_client(srv):
    client = aiohttpclient.InferenceServerClient(srv.http_url)
    try:
        results = await asyncio.gather(
            *[client.infer("tiny", inputs(feed(seed=i))) for i in range(8)]
        )
        assert all(r.as_numpy("start_logits").shape == (1, 16) for r in results)
    finally:
        await client.close()


def _stats(client, model):
    return client.get_inference_statistics(model)["model_stats"][0]


def test_dynamic_batching_merges_concurrent_requests(srv, tiny_repo):
    with http_client(srv.http_url) as c:
        before = _stats(c, "slowbatch")
    sizes = [1, 2, 1, 4]  # a client sending its own batch (-b 4) combines with the others
    datas = [feed(batch=b, seed=i) for i, b in enumerate(sizes)]

    def one(data):
        with http_client(srv.http_url) as c:
            return c.infer("slowbatch", inputs(data)).as_numpy("start_logits")

    with ThreadPoolExecutor(len(sizes)) as pool:
        results = list(pool.map(one, datas))
    for data, got in zip(datas, results, strict=True):
        np.testing.assert_allclose(got, reference(tiny_repo, data)[0], rtol=1e-5, atol=1e-5)
    with http_client(srv.http_url) as c:
        after = _stats(c, "slowbatch")
    executions = after["execution_count"] - before["execution_count"]
    assert after["inference_count"] - before["inference_count"] == 8
    assert executions < len(sizes), "concurrent requests were not merged"
    assert any(b["batch_size"] > 4 for b in after["batch_stats"])


def test_statistics_have_triton_fields(client):
    client.infer("tiny", inputs(feed()))
    stats = _stats(client, "tiny")
    infer = stats["inference_stats"]
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert set(infer[key]) == {"count", "ns"}
    assert infer["success"]["count"] >= 1 and infer["compute_infer"]["ns"] > 0
    counts = {infer[k]["count"] for k in ("compute_input", "compute_infer", "compute_output")}
    assert len(counts) == 1  # perf_analyzer aborts when these differ
    assert stats["batch_stats"][0]["compute_infer"]["count"] >= 1


def test_queue_full_is_a_clear_error_and_nothing_is_lost(srv):
    data = feed(batch=8, seq=256)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(_):
        with http_client(srv.http_url) as c:
            try:
                c.infer("queue1", inputs(data))
                result = "ok"
            except InferenceServerException as exc:
                result = str(exc)
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(48)))
    refused = [o for o in outcomes if o != "ok"]
    assert refused, "max_queue_size 1 never refused anything"
    assert all("queue is full" in o for o in refused), refused[:3]
    assert outcomes.count("ok") + len(refused) == 48
    assert outcomes.count("ok") >= 2


def _post(srv: ServerProcess, path: str, body: bytes, headers: dict | None = None):
    host, port = srv.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", path, body=body, headers=headers or {})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, payload


def _good_json(**override):
    doc = {
        "inputs": [
            {"name": n, "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]} for n in INPUTS
        ]
    }
    doc.update(override)
    return doc


BAD_REQUESTS = [
    ("invalid JSON", b"{nope", {}, 400, "not valid JSON"),
    (
        "unknown datatype",
        orjson.dumps({"inputs": [dict(_good_json()["inputs"][0], datatype="I9")]}),
        {},
        400,
        "unknown datatype",
    ),
    (
        "element count",
        orjson.dumps({"inputs": [dict(_good_json()["inputs"][0], shape=[1, 5])]}),
        {},
        400,
        "has 4 elements but shape",
    ),
    (
        "datatype vs config",
        orjson.dumps({"inputs": [dict(i, datatype="INT32") for i in _good_json()["inputs"]]}),
        {},
        400,
        "expects INT64",
    ),
    (
        "missing input",
        orjson.dumps({"inputs": _good_json()["inputs"][:2]}),
        {},
        400,
        "token_type_ids",
    ),
    (
        "extra input",
        orjson.dumps(
            {"inputs": [*_good_json()["inputs"], dict(_good_json()["inputs"][0], name="x")]}
        ),
        {},
        400,
        "unexpected inference input 'x'",
    ),
    (
        "batch above max",
        orjson.dumps(
            {"inputs": [dict(i, shape=[16, 1], data=[1] * 16) for i in _good_json()["inputs"]]}
        ),
        {},
        400,
        "max_batch_size",
    ),
    (
        "rank",
        orjson.dumps({"inputs": [dict(i, shape=[4]) for i in _good_json()["inputs"]]}),
        {},
        400,
        "expects [batch]",
    ),
    (
        "unknown output",
        orjson.dumps(_good_json(outputs=[{"name": "nope"}])),
        {},
        400,
        "unknown requested output 'nope'",
    ),
    (
        "binary truncated",
        orjson.dumps(
            {
                "inputs": [
                    dict(
                        name="input_ids",
                        datatype="INT64",
                        shape=[1, 4],
                        parameters={"binary_data_size": 32},
                    )
                ]
            }
        )
        + b"\0" * 8,
        {"Inference-Header-Content-Length": None},
        400,
        "runs past the end",
    ),
    (
        "header length",
        b"{}",
        {"Inference-Header-Content-Length": "77"},
        400,
        "Inference-Header-Content-Length is 77",
    ),
    ("bad header length", b"{}", {"Inference-Header-Content-Length": "x"}, 400, "not an integer"),
    ("body too large", b" " * (1024 * 1024 + 10), {}, 400, "--http-max-input-size"),
    ("bad gzip", b"not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
]


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_malformed_requests_get_clear_errors_and_server_keeps_serving(
    srv, client, case, body, headers, status, message
):
    headers = dict(headers)
    if headers.get("Inference-Header-Content-Length", "") is None:
        headers["Inference-Header-Content-Length"] = str(body.index(b"\0"))
    code, payload = _post(srv, "/v2/models/tiny/infer", body, headers)
    assert code == status, payload
    assert message in orjson.loads(payload)["error"]
    assert client.infer("tiny", inputs(feed())).as_numpy("start_logits").shape == (1, 16)


def test_unknown_model_and_paths(srv):
    code, payload = _post(srv, "/v2/models/nope/infer", orjson.dumps(_good_json()))
    assert code == 404 and "unknown model 'nope'" in orjson.loads(payload)["error"]
    code, _ = _post(srv, "/v2/models/tiny/versions/9/infer", orjson.dumps(_good_json()))
    assert code == 404
    code, _ = _post(srv, "/v3/whatever", b"")
    assert code == 404


def test_load_refused_outside_explicit_mode(srv):
    code, payload = _post(srv, "/v2/repository/models/tiny/load", b"")
    assert code == 400 and "--model-control-mode explicit" in orjson.loads(payload)["error"]


def test_repository_index(client):
    index = client.get_model_repository_index()
    assert {"name": "tiny", "version": "1", "state": "READY", "reason": ""} in index


def test_prometheus_metrics_with_triton_names(srv, client):
    client.infer("tiny", inputs(feed()))
    text = urllib.request.urlopen(srv.metrics_url, timeout=10).read().decode()
    for name in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
    ):
        assert f'{name}{{model="tiny",' in text or f'{name}{{model="tiny"' in text, name
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('nv_inference_request_success{model="tiny",version="1"}')
    )
    assert float(line.split()[-1]) >= 1


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
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        index = {row["name"]: row for row in client.get_model_repository_index()}
        assert index["broken"]["state"] == "UNAVAILABLE"
        assert "data_type" in index["broken"]["reason"]
        assert client.is_model_ready("good") and not client.is_model_ready("broken")
        assert not client.is_server_ready()  # strict readiness, as tritonserver
        client.infer("good", inputs(feed()))
    finally:
        client.close()
        assert server.stop() == 0


def test_explicit_load_with_config_override_and_unload(tiny_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo / TINY, repo / "m")
    (repo / "m" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 2')
    server = start_server(repo, extra=["--model-control-mode", "explicit"])
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert client.get_model_repository_index() == [{"name": "m"}]
        assert not client.is_model_ready("m")
        client.load_model(
            "m",
            config=orjson.dumps(
                {"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 100}}
            ).decode(),
        )
        assert client.get_model_config("m")["max_batch_size"] == 4
        client.infer("m", inputs(feed(batch=4)))
        client.unload_model("m")
        assert not client.is_model_ready("m")
        with pytest.raises(InferenceServerException, match="not ready"):
            client.infer("m", inputs(feed()))
        with pytest.raises(InferenceServerException, match="max_batch_size"):
            client.load_model(
                "m",
                config='{"max_batch_size": 2, "dynamic_batching": {"preferred_batch_size": [9]}}',
            )
        client.load_model("m")
        assert client.is_model_ready("m")
    finally:
        client.close()
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
        c = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        try:
            results.append(c.infer("slow", inputs(feed(seed=i))).as_numpy("start_logits").shape)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on
            results.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    import time

    time.sleep(0.5)  # requests are waiting in the 1.5 s batching window
    assert server.stop() == 0
    for t in threads:
        t.join(30)
    assert results == [(1, 16)] * 6, results
    assert "bertserve stopped" in server.output()


def test_poll_mode_picks_up_added_and_removed_models(tiny_repo, tmp_path):
    import time

    repo = tmp_path / "repo"
    repo.mkdir()
    server = start_server(
        repo, extra=["--model-control-mode", "poll", "--repository-poll-secs", "0.3"]
    )
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        copy_model(
            tiny_repo, TINY, repo, "late", 'platform: "onnxruntime_onnx"\nmax_batch_size: 2\n'
        )
        deadline = time.monotonic() + 30
        while not client.is_model_ready("late") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.is_model_ready("late")
        client.infer("late", inputs(feed()))
        shutil.rmtree(repo / "late")
        while client.get_model_repository_index() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get_model_repository_index() == []
    finally:
        client.close()
        assert server.stop() == 0
