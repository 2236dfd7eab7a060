"""What only HTTP has: raw bodies and headers, the route table, the JSON itself."""

from __future__ import annotations

import orjson
import pytest

from bertserve.server import Server
from tests.frontends.conftest import MAX_HTTP_BODY, url
from tests.frontends.messages import good, json_body, post
from tests.frontends.protocols import Client, feed

_TRUNCATED = {"name": "input_ids", "datatype": "INT64", "shape": [1, 4],
              "parameters": {"binary_data_size": 32}}  # fmt: skip
BAD_REQUESTS = [  # (case, body, headers, status, text in the error)
    ("invalid JSON", b"{nope", {}, 400, "not valid JSON"),
    ("unknown datatype", json_body([("input_ids", "I9", [1, 4], None)]), {}, 400,
     "unknown datatype"),
    ("element count", json_body([("input_ids", "INT64", [1, 5], None)]), {}, 400,
     "has 4 elements but shape"),
    ("datatype vs config", json_body(good(datatype="INT32")), {}, 400,
     "inference input 'input_ids' data-type is 'INT32', but model 'tiny' expects 'INT64'"),
    ("missing input", json_body(good()[:2]), {}, 400,
     "missing required input(s) ['token_type_ids']"),
    ("extra input", json_body([*good(), ("x", "INT64", [1, 4], None)]), {}, 400,
     "expected 3 inputs but got 4 inputs for model 'tiny'"),
    ("batch above max", json_body(good(shape=[16, 1], values=[1] * 16)), {}, 400,
     "inference request batch-size must be <= 8 for 'tiny'"),
    ("rank", json_body(good(shape=[4])), {}, 400,
     "unexpected shape for input 'input_ids' for model 'tiny'. Expected [-1,-1], got [4]."),
    ("unknown output", json_body(outputs=[{"name": "nope"}]), {}, 400,
     "unexpected inference output 'nope' for model 'tiny'"),
    ("duplicate output", json_body(outputs=[{"name": "end_logits"}] * 2), {}, 400,
     "output 'end_logits' already exists in request"),
    ("duplicate input", json_body([*good(), good()[0]]), {}, 400,
     "input 'input_ids' already exists in request"),
    ("binary truncated", orjson.dumps({"inputs": [_TRUNCATED]}) + b"\0" * 8,
     {"Inference-Header-Content-Length": None}, 400,
     "unexpected size for input 'input_ids', expecting 24 additional bytes for model 'tiny'"),
    ("header length", b"{}", {"Inference-Header-Content-Length": "77"}, 400,
     "Inference-Header-Content-Length is 77"),
    ("bad header length", b"{}", {"Inference-Header-Content-Length": "x"}, 400, "not a byte count"),
    ("body too large", b" " * (MAX_HTTP_BODY + 10), {}, 413, "--http-max-input-size"),
    ("bad gzip", b"not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
    ("unknown encoding", b"{}", {"Content-Encoding": "br"}, 400, "'br' is not supported"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_malformed_requests_get_clear_errors_and_server_keeps_serving(
    served: Server, http: Client, case, body, headers, status, message
) -> None:
    headers = dict(headers)
    if headers.get("Inference-Header-Content-Length", "") is None:
        headers["Inference-Header-Content-Length"] = str(body.index(b"\0"))
    code, payload, _ = post(url(served, "http"), "/v2/models/tiny/infer", body, headers)
    assert code == status, payload
    assert message in orjson.loads(payload)["error"]
    assert http.infer("tiny", http.inputs(feed())).as_numpy("start_logits").shape == (1, 16)


GOOD = json_body(good(values=[1, 1, 0, 0]))  # ids in every vocabulary
# (method, path, body, status, text in the error or None for an empty body). Every row of
# endpoints/http.ROUTES is reached, with its placeholders, and each way of missing them.
ROUTING = [
    ("GET", "/v2", b"", 200, None),
    ("GET", "/v2/", b"", 200, None),
    ("GET", "/v2/health/live", b"", 200, None),
    ("GET", "/v2/health/ready", b"", 200, None),
    ("GET", "/v2/health/other", b"", 404, "unknown path '/v2/health/other'"),
    ("GET", "/v2/health", b"", 404, "unknown path"),
    ("GET", "/v2/models", b"", 400, "the path needs a model name"),
    ("GET", "/v2/models/stats", b"", 200, None),
    ("GET", "/v2/models/tiny", b"", 200, None),
    ("GET", "/v2/models/tiny/versions/1", b"", 200, None),
    ("GET", "/v2/models/tiny/ready", b"", 200, None),
    ("GET", "/v2/models/tiny/versions/1/ready", b"", 200, None),
    ("GET", "/v2/models/tiny/versions/7/ready", b"", 400, None),
    ("GET", "/v2/models/nope/ready", b"", 400, None),
    ("GET", "/v2/models/tiny/config", b"", 200, None),
    ("GET", "/v2/models/tiny/versions/1/config", b"", 200, None),
    ("GET", "/v2/models/tiny/stats", b"", 200, None),
    ("GET", "/v2/models/tiny/versions/1/stats", b"", 200, None),
    ("GET", "/v2/models/tiny/bogus", b"", 404, "unknown path '/v2/models/tiny/bogus'"),
    ("GET", "/v2/models/tiny/versions", b"", 404, "unknown path"),
    ("GET", "/v2/models/tiny/versions/1/infer/x", b"", 404, "unknown path"),
    # a model named like a literal segment is still a model
    ("GET", "/v2/models/ready", b"", 400, None),
    ("GET", "/v2/models/tiny/versions/load", b"", 400, "version string 'load'"),
    ("POST", "/v2/models/tiny/infer", GOOD, 200, None),
    ("POST", "/v2/models/tiny/versions/1/infer", GOOD, 200, None),
    ("POST", "/v2/models/nope/infer", GOOD, 400, "Request for unknown model: 'nope' is not found"),
    ("POST", "/v2/models/tiny/versions/9/infer", GOOD, 404, "'tiny' version 9 is not found"),
    ("GET", "/v2/models/tiny/infer", b"", 405, "takes POST"),
    ("POST", "/v2/repository/index", b"", 200, None),
    ("POST", "/v2/repository/index", b'{"ready": true}', 200, None),
    ("POST", "/v2/repository/index", b"[1]", 400, "must be a JSON object"),
    ("GET", "/v2/repository/index", b"", 405, "takes POST"),
    ("POST", "/v2/repository/models/tiny/load", b"", 501, "--model-control-mode explicit"),
    ("POST", "/v2/repository/models/tiny/unload", b"", 501, "--model-control-mode explicit"),
    ("POST", "/v2/repository/models/tiny/unload", b"{nope", 400, "not valid JSON"),
    ("GET", "/v2/repository/models/tiny/load", b"", 405, "takes POST"),
    ("POST", "/v2/repository/other", b"", 404, "unknown path"),
    ("GET", "/v2/systemsharedmemory/status", b"", 200, None),
    (
        "GET",
        "/v2/systemsharedmemory/region/r/status",
        b"",
        404,
        "Unable to find system shared memory region: 'r'",
    ),
    (
        "POST",
        "/v2/systemsharedmemory/region/r/register",
        b"{}",
        501,
        "Client shared memory is disabled",
    ),
    ("POST", "/v2/systemsharedmemory/unregister", b"", 501, "Client shared memory is disabled"),
    (
        "POST",
        "/v2/systemsharedmemory/region/r/unregister",
        b"",
        501,
        "Client shared memory is disabled",
    ),
    ("POST", "/v2/systemsharedmemory/status", b"", 405, "takes GET"),
    ("GET", "/v2/cudasharedmemory/status", b"", 200, None),
    (
        "GET",
        "/v2/cudasharedmemory/region/r/status",
        b"",
        404,
        "Unable to find cuda shared memory region: 'r'",
    ),
    (
        "POST",
        "/v2/cudasharedmemory/region/r/register",
        b"{}",
        501,
        "Client shared memory is disabled",
    ),
    ("POST", "/v2/cudasharedmemory/unregister", b"", 501, "Client shared memory is disabled"),
    (
        "POST",
        "/v2/cudasharedmemory/region/r/unregister",
        b"",
        501,
        "Client shared memory is disabled",
    ),
    ("GET", "/v2/cudasharedmemory/region/r/register", b"", 405, "takes POST"),
    ("POST", "/v3/whatever", b"", 404, "unknown path '/v3/whatever'"),
    ("GET", "/", b"", 404, "unknown path '/'"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    ROUTING,
    ids=[f"{m} {p} {len(b)}" for m, p, b, *_ in ROUTING],
)
def test_routing(served: Server, method, path, body, status, error) -> None:
    code, payload, headers = post(url(served, "http"), path, body, method=method)
    assert code == status, payload
    if error is not None:
        assert error in orjson.loads(payload)["error"]
    elif status == 200 and payload:
        orjson.loads(payload)  # a JSON document
    if status == 405:
        assert headers["allow"] == ("GET" if path.endswith("/status") else "POST")


def test_json_answers_use_numbers_and_triton_keys(http: Client) -> None:
    config = http.get_model_config("nobatch")
    assert config["input"][0]["dims"] == [-1, -1]
    meta = http.get_model_metadata("tiny")
    assert meta["inputs"][0] == {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}
    http.infer("tiny", http.inputs(feed()))
    stats = http.get_inference_statistics("tiny")["model_stats"][0]
    infer = stats["inference_stats"]
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert set(infer[key]) == {"count", "ns"}
    assert {"name": "tiny", "version": "1", "state": "READY", "reason": ""} in (
        http.get_model_repository_index()
    )
