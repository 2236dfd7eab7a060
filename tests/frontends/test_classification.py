"""Triton's classification extension over HTTP and gRPC: an output asked with a class count comes
back as its top K "value:index[:label]" BYTES per batch item, labels from label_filename."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bertserve.server import Server
from tests.frontends.conftest import running, settings, url
from tests.frontends.protocols import Client
from tests.triton_models import add_sub


@pytest.fixture(scope="module")
def class_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("classify")
    add_sub(repo, "onnx_int32_int32_int32", "INT32", ("INT32", "INT32"), [16], labels=16)
    add_sub(repo, "onnx_float32_float32_float32", "FP32", ("FP32", "FP32"), [16], labels=10)
    add_sub(repo, "onnx_float16_float16_float16", "FP16", ("FP16", "FP16"), [16])
    add_sub(repo, "onnx_nobatch_int32_int32_int32", "INT32", ("INT32", "INT32"), [16],
            max_batch_size=0, labels=16)  # fmt: skip
    with running(settings(repo)) as server:
        yield server


@pytest.fixture(params=["http", "grpc"])
def client(class_server: Server, request: pytest.FixtureRequest) -> Iterator[Client]:
    with Client(request.param, url(class_server, request.param)) as c:
        yield c


def _classify(
    client: Client, model: str, dtype: type, k: int, batch: int = 1, binary: bool = True
) -> dict[str, np.ndarray]:
    datatype = {np.int32: "INT32", np.float32: "FP32", np.float16: "FP16"}[dtype]
    shape = [batch, 16] if batch else [16]
    a = (np.arange(16, dtype=dtype) * np.ones(shape, dtype=dtype)).astype(dtype)
    b = np.ones(shape, dtype=dtype)
    tensors = []
    for name, array in (("INPUT0", a), ("INPUT1", b)):
        tensor = client.module.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    extra = {"binary_data": binary} if client.module is httpclient else {}
    outputs = [
        client.module.InferRequestedOutput("OUTPUT0", class_count=k, **extra),
        client.module.InferRequestedOutput("OUTPUT1", class_count=k, **extra),
    ]
    result = client.infer(model, tensors, outputs=outputs)
    return {n: result.as_numpy(n) for n in ("OUTPUT0", "OUTPUT1")}


def test_top_k_with_labels_and_without(client: Client) -> None:
    got = _classify(client, "onnx_int32_int32_int32", np.int32, 3)
    assert got["OUTPUT0"].tolist() == [[b"16:15:label15", b"15:14:label14", b"14:13:label13"]]
    # OUTPUT1 (a - 1) has no label file: "value:index".
    assert got["OUTPUT1"].tolist() == [[b"14:15", b"13:14", b"12:13"]]


def test_floats_print_as_tritonserver_prints_them(client: Client) -> None:
    got = _classify(client, "onnx_float32_float32_float32", np.float32, 2)
    # Indexes past the label file's lines have no label.
    assert got["OUTPUT0"].tolist() == [[b"16.000000:15", b"15.000000:14"]]
    got = _classify(client, "onnx_float32_float32_float32", np.float32, 12)
    assert got["OUTPUT0"][0][-1] == b"5.000000:4:label4"


def test_batches_and_json(client: Client) -> None:
    for binary in (True, False):
        got = _classify(client, "onnx_int32_int32_int32", np.int32, 2, batch=3, binary=binary)
        assert got["OUTPUT0"].shape == (3, 2)
        values = [v.decode() if isinstance(v, bytes) else v for v in got["OUTPUT0"][2]]
        assert values == ["16:15:label15", "15:14:label14"]


def test_without_batch_axis_and_more_classes_than_values(client: Client) -> None:
    got = _classify(client, "onnx_nobatch_int32_int32_int32", np.int32, 40, batch=0)
    assert got["OUTPUT0"].shape == (16,)
    assert got["OUTPUT0"][0] == b"16:15:label15"


def test_types_without_an_order_are_refused(client: Client) -> None:
    with pytest.raises(
        InferenceServerException,
        match="class result not available for output due to unsupported type 'FP16'",
    ):
        _classify(client, "onnx_float16_float16_float16", np.float16, 2)


def test_listed_among_the_extensions(client: Client) -> None:
    assert "classification" in client.server_metadata().extensions
