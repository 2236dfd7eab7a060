"""`reshape` in the config, for inputs and outputs, over HTTP and gRPC: the client speaks the
config's `dims`, the model sees `reshape.shape`, outputs come back in the config's `dims`
(variable sizes carried across); scalar models complete to dims [1] with an empty reshape."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from onnx import TensorProto, helper

from bertserve.server import Server
from tests.frontends.conftest import running, settings, url
from tests.frontends.protocols import Client
from tests.triton_models import write_model

_RESHAPED = """platform: "onnxruntime_onnx"
max_batch_size: 8
input { name: "INPUT0" data_type: TYPE_FP32 dims: [8, -1] reshape { shape: [2, 4, -1] } }
output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [8, -1] reshape { shape: [2, 4, -1] } }
"""
_FLAT = """platform: "onnxruntime_onnx"
max_batch_size: 0
input { name: "INPUT0" data_type: TYPE_FP32 dims: [4] reshape { shape: [2, 2] } }
output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] reshape { shape: [2, 2] } }
"""


def _identity(shape: list[int | None]) -> object:
    return helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "g",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, shape)],
    )


@pytest.fixture(scope="module")
def reshape_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("reshape")
    write_model(repo, "reshaped", _identity([None, 2, 4, None]), _RESHAPED)
    write_model(repo, "flat", _identity([2, 2]), _FLAT)
    # One value per batch item, no config: completed to dims [1] with an empty reshape.
    write_model(repo, "scalar", _identity([None]), None)
    with running(settings(repo)) as server:
        yield server


@pytest.fixture(params=["http", "grpc"])
def client(reshape_server: Server, request: pytest.FixtureRequest) -> Iterator[Client]:
    with Client(request.param, url(reshape_server, request.param)) as c:
        yield c


def _run(client: Client, model: str, array: np.ndarray) -> np.ndarray:
    tensor = client.module.InferInput("INPUT0", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return client.infer(model, [tensor]).as_numpy("OUTPUT0")


def test_variable_reshape_both_ways(client: Client) -> None:
    array = np.arange(2 * 8 * 3, dtype=np.float32).reshape(2, 8, 3)
    got = _run(client, "reshaped", array)
    assert got.shape == (2, 8, 3)
    np.testing.assert_array_equal(got, array)


def test_fixed_reshape_without_batching(client: Client) -> None:
    array = np.arange(4, dtype=np.float32)
    got = _run(client, "flat", array)
    assert got.shape == (4,)
    np.testing.assert_array_equal(got, array)


def test_scalar_model_completes_to_dims_one_with_an_empty_reshape(client: Client) -> None:
    config = client.config("scalar")
    assert config.max_batch_size == 4
    for tensor in (config.input[0], config.output[0]):
        assert list(tensor.dims) == [1]
        assert tensor.HasField("reshape") and list(tensor.reshape.shape) == []
    meta = client.metadata("scalar")
    assert list(meta.inputs[0].shape) == [-1, 1]
    got = _run(client, "scalar", np.array([[1.5], [2.5]], dtype=np.float32))
    assert got.shape == (2, 1)
    np.testing.assert_array_equal(got, [[1.5], [2.5]])


def test_metadata_speaks_the_config_dims(client: Client) -> None:
    meta = client.metadata("reshaped")
    assert list(meta.inputs[0].shape) == [-1, 8, -1]
    assert list(meta.outputs[0].shape) == [-1, 8, -1]
