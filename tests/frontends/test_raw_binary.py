"""Triton's raw binary requests over HTTP (`Inference-Header-Content-Length: 0`): the body is
the only input's tensor, its shape deduced from the config; binary outputs come back. Refusals
in tritonserver's words for models it cannot be deduced for."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from bertserve.server import Server
from tests.frontends.conftest import running, settings, url
from tests.frontends.messages import post
from tests.triton_models import identity

RAW = {"Inference-Header-Content-Length": "0"}
QUEUE1 = (
    "dynamic_batching { max_queue_delay_microseconds: 1500000 preferred_batch_size: [8] "
    "default_queue_policy { max_queue_size: 1 } }\n"
)


@pytest.fixture(scope="module")
def raw_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("raw")
    identity(repo, "onnx_zero_1_float32", "FP32", [-1])
    identity(repo, "onnx_zero_1_float32_queue", "FP32", [-1], extra=QUEUE1)
    identity(repo, "onnx_zero_1_object", "BYTES", [-1])
    identity(repo, "onnx_zero_1_object_1_element", "BYTES", [1])
    identity(repo, "onnx_zero_1_float16", "FP16", [-1, -1])
    identity(repo, "onnx_zero_3_float32", "FP32", [-1], count=3)
    identity(repo, "onnx_nobatch_zero_1_float32", "FP32", [4], max_batch_size=0)
    with running(settings(repo)) as server:
        yield server


def _post(server: Server, model: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
    return post(url(server, "http"), f"/v2/models/{model}/infer", body, RAW)


def _output(payload: bytes, headers: dict[str, str]) -> tuple[dict, bytes]:
    size = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    return orjson.loads(payload[:size]), payload[size:]


@pytest.mark.parametrize("count", [8, 32])
def test_raw_float_body_is_the_only_input(raw_server: Server, count: int) -> None:
    body = np.arange(count, dtype=np.float32).tobytes()
    status, payload, headers = _post(raw_server, "onnx_zero_1_float32", body)
    assert status == 200, payload
    header, data = _output(payload, headers)
    assert data == body
    assert header["outputs"][0]["shape"] == [1, count]


def test_raw_body_without_batching(raw_server: Server) -> None:
    body = np.arange(4, dtype=np.float32).tobytes()
    status, payload, headers = _post(raw_server, "onnx_nobatch_zero_1_float32", body)
    assert status == 200, payload
    assert _output(payload, headers)[1] == body


def test_raw_bytes_for_a_one_element_string_input(raw_server: Server) -> None:
    status, payload, headers = _post(raw_server, "onnx_zero_1_object_1_element", b"427")
    assert status == 200, payload
    # BYTES come back length-prefixed.
    assert _output(payload, headers)[1] == b"\x03\x00\x00\x00427"


def test_chunked_body(raw_server: Server) -> None:
    import http.client

    body = np.arange(8, dtype=np.float32).tobytes()
    host, port = url(raw_server, "http").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST", "/v2/models/onnx_zero_1_float32/infer", body=iter([body]),
            headers={**RAW, "Transfer-Encoding": "chunked"}, encode_chunked=True,
        )  # fmt: skip
        response = conn.getresponse()
        payload = response.read()
        assert response.status == 200, payload
        assert _output(payload, dict(response.getheaders()))[1] == body
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        ("onnx_zero_1_object", b"427",
         "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]"),
        ("onnx_zero_1_float16", np.ones([2, 2], np.float16).tobytes(),
         "The shape of the raw input 'INPUT0' can not be deduced because there are more than "
         "one variable-sized dimension"),
        ("onnx_zero_3_float32", np.arange(24, dtype=np.float32).tobytes(),
         "Raw request must only have 1 input (found 1) to be deduced but got 3 inputs in "
         "'onnx_zero_3_float32' model configuration"),
        ("onnx_nobatch_zero_1_float32", b"\x00" * 12,
         "input byte size mismatch for input 'INPUT0' for model 'onnx_nobatch_zero_1_float32'. "
         "Expected 16, got 12"),
    ],
)  # fmt: skip
def test_refusals(raw_server: Server, model: str, body: bytes, message: str) -> None:
    status, payload, _ = _post(raw_server, model, body)
    assert status == 400
    assert message in orjson.loads(payload)["error"]


def test_a_full_queue_answers_503(raw_server: Server) -> None:
    """Triton's descriptive status code: the second request finds the one-place queue full."""
    body = np.arange(8, dtype=np.float32).tobytes()
    first: list[int] = []
    waiting = threading.Thread(
        target=lambda: first.append(_post(raw_server, "onnx_zero_1_float32_queue", body)[0])
    )
    waiting.start()
    time.sleep(0.5)
    status, payload, _ = _post(raw_server, "onnx_zero_1_float32_queue", body)
    waiting.join(30)
    assert status == 503, payload
    assert first == [200]
