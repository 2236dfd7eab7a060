"""HTTP requests Triton's own HTTP tests send, answered in tritonserver's words: deeply nested
JSON data, shapes whose element or byte counts overflow, a non-boolean `ready`, a body over
the limit; the server keeps serving after each."""

from __future__ import annotations

import json

import orjson
import pytest

from bertserve.server import Server
from tests.frontends.conftest import MAX_HTTP_BODY, url
from tests.frontends.messages import post
from tests.frontends.protocols import Client, feed


def _nested(depth: int, value: str) -> object:
    for _ in range(depth):
        value = f"[{value}]"
    return json.loads(value)


def _infer(served: Server, inputs: list[dict]) -> tuple[int, str]:
    status, payload, _ = post(
        url(served, "http"), "/v2/models/tiny/infer", orjson.dumps({"inputs": inputs})
    )
    return status, orjson.loads(payload).get("error", "")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([2**4, 2**60 + 2], "causes total element count to exceed maximum size of"),
        ([2**2, 2**60 + 2], "byte size overflow for input"),
    ],
)
def test_shapes_that_overflow(served: Server, http: Client, shape: list[int], message: str) -> None:
    status, error = _infer(
        served, [{"name": "input_ids", "shape": shape, "datatype": "FP32", "data": [1.0]}]
    )
    assert status == 400 and message in error
    assert http.is_server_live()


@pytest.mark.parametrize(("depth", "refused"), [(120, True), (50, False)])
def test_json_nesting_depth(served: Server, depth: int, refused: bool) -> None:
    status, error = _infer(
        served,
        [{"name": "input_ids", "datatype": "INT64", "shape": [1, 1], "data": _nested(depth, "1")}],
    )
    assert status == 400
    limit = "JSON nesting depth exceeds maximum allowed limit (100)"
    assert (limit in error) == refused, error


def test_index_ready_must_be_a_boolean(served: Server, http: Client) -> None:
    status, payload, _ = post(url(served, "http"), "/v2/repository/index", b'{"ready": [true]}')
    assert status == 400
    assert "Invalid value for 'ready': expected a boolean" in orjson.loads(payload)["error"]
    assert http.is_server_live()


def test_body_over_the_limit_names_the_flag(served: Server, http: Client) -> None:
    status, payload, _ = post(
        url(served, "http"), "/v2/models/tiny/infer", b" " * (MAX_HTTP_BODY + 10)
    )
    error = orjson.loads(payload)["error"]
    assert status == 413  # tritonserver answers 400; 413 says what is wrong (issue 13)
    assert "request JSON size of" in error
    assert " exceeds the maximum allowed input size" in error
    assert "--http-max-input-size" in error
    assert http.infer("tiny", http.inputs(feed())).as_numpy("start_logits").shape == (1, 16)
