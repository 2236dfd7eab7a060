"""BYTES tensors on the ONNX Runtime backend round-trip exactly (UTF-8 and arbitrary bytes, NULs
included), in JSON and binary, over HTTP and gRPC; graphs that read strings as numbers see the
bytes the client sent (Triton's string test models, built here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bertserve.server import Server
from tests.frontends.conftest import running, settings, url
from tests.frontends.protocols import Client
from tests.triton_models import add_sub, identity

#: What L0_string_io sends: serialized protobufs, so invalid UTF-8, NULs inside and at the end.
ARBITRARY = [
    b"\nF\n'\n\x01a\x12\"\x1a \n\x1e\xfa\x03\x94\x01\x0f\xd7\x02\xf1\x05",
    b"\n&\n\x07\n\x01a\x12\x02\x1a\x00\n\x0c\n\x01b\x12{\xbc\x0e>\x00\x00\x00",
    b"",
    b"\x00",
    b"\xff\xfe\xfd",
    "h\u00e9llo \u4e16\u754c".encode(),
    b"plain",
    b"\x1b\x931\xbf\x00\x00",
]
UNICODE = ["abc", "h\u00e9llo", "\u4e16\u754c", "", "tab\there", "10000", "emoji \U0001f600", "x"]


@pytest.fixture(scope="module")
def strings_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("strings")
    identity(repo, "onnx_zero_1_object", "BYTES", [-1])
    identity(repo, "onnx_nobatch_zero_1_object", "BYTES", [-1], max_batch_size=0)
    add_sub(repo, "onnx_object_int32_int32", "BYTES", ("INT32", "INT32"), [16])
    add_sub(repo, "onnx_int32_object_object", "INT32", ("BYTES", "BYTES"), [16])
    with running(settings(repo)) as server:
        yield server


@pytest.fixture(params=["http", "grpc"])
def sclient(strings_server: Server, request: pytest.FixtureRequest) -> Iterator[Client]:
    with Client(request.param, url(strings_server, request.param)) as c:
        yield c


def _infer(
    client: Client,
    model: str,
    arrays: dict[str, np.ndarray],
    binary_in: bool = True,
    binary_out: bool = True,
    outputs: tuple[str, ...] = ("OUTPUT0",),
) -> dict[str, np.ndarray]:
    module = client.module
    tensors = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype.kind in "OSU" else "INT32"
        tensor = module.InferInput(name, list(array.shape), datatype)
        if module is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary_in)
        else:
            tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    if module is httpclient:
        wanted = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in outputs]
    else:
        wanted = [grpcclient.InferRequestedOutput(n) for n in outputs]
    result = client.infer(model, tensors, outputs=wanted)
    return {n: result.as_numpy(n) for n in outputs}


@pytest.mark.parametrize("dtype", [np.object_, np.bytes_])
def test_arbitrary_bytes_round_trip_exactly_in_binary(sclient: Client, dtype: type) -> None:
    sent = np.array(ARBITRARY, dtype=object)[None]
    if dtype is np.bytes_:
        sent = sent.astype(np.bytes_)  # numpy drops trailing NULs here, the client sends that
    got = _infer(sclient, "onnx_zero_1_object", {"INPUT0": sent})["OUTPUT0"]
    assert got.shape == (1, len(ARBITRARY)) and got.dtype == np.object_
    assert got.tolist() == [[bytes(v) for v in sent[0]]]


def test_unicode_round_trips_in_json_and_binary(sclient: Client) -> None:
    sent = np.array([UNICODE], dtype=object)
    for binary_in in (True, False):
        for binary_out in (True, False):
            got = _infer(sclient, "onnx_zero_1_object", {"INPUT0": sent}, binary_in, binary_out)
            decoded = [v.decode() if isinstance(v, bytes) else v for v in got["OUTPUT0"][0]]
            assert decoded == UNICODE


def test_without_batching(sclient: Client) -> None:
    sent = np.array(ARBITRARY, dtype=object)
    got = _infer(sclient, "onnx_nobatch_zero_1_object", {"INPUT0": sent})["OUTPUT0"]
    assert got.tolist() == ARBITRARY


def test_non_utf8_output_cannot_be_json_and_says_how_to_get_it(strings_server: Server) -> None:
    with Client("http", url(strings_server, "http")) as client:
        sent = np.array([[b"\xff"]], dtype=object)
        with pytest.raises(InferenceServerException, match="not UTF-8.*binary_data"):
            _infer(client, "onnx_zero_1_object", {"INPUT0": sent}, binary_out=False)


def test_graph_reads_strings_as_numbers(sclient: Client) -> None:
    a = np.array([[str(10000 + i) for i in range(16)]], dtype=object)
    b = np.array([[str(i) for i in range(16)]], dtype=object)
    for binary in (True, False):
        got = _infer(sclient, "onnx_object_int32_int32", {"INPUT0": a, "INPUT1": b}, binary,
                     outputs=("OUTPUT0", "OUTPUT1"))  # fmt: skip
        np.testing.assert_array_equal(got["OUTPUT0"], [[10000 + 2 * i for i in range(16)]])
        np.testing.assert_array_equal(got["OUTPUT1"], [[10000] * 16])


def test_graph_writes_numbers_as_strings(sclient: Client) -> None:
    a = np.arange(16, dtype=np.int32)[None]
    got = _infer(sclient, "onnx_int32_object_object", {"INPUT0": a, "INPUT1": a},
                 outputs=("OUTPUT0", "OUTPUT1"))  # fmt: skip
    assert got["OUTPUT0"].tolist() == [[str(2 * i).encode() for i in range(16)]]
    assert got["OUTPUT1"].tolist() == [[b"0"] * 16]


def test_typed_bytes_contents_over_grpc(strings_server: Server) -> None:
    request = grpcclient.service_pb2.ModelInferRequest(model_name="onnx_zero_1_object")
    tensor = request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, len(ARBITRARY)])
    tensor.contents.bytes_contents.extend(ARBITRARY)
    import grpc

    with grpc.insecure_channel(url(strings_server, "grpc")) as channel:
        stub = grpcclient.service_pb2_grpc.GRPCInferenceServiceStub(channel)
        result = grpcclient.InferResult(stub.ModelInfer(request))
    assert result.as_numpy("OUTPUT0").tolist() == [ARBITRARY]


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (14, "expected 16 string elements for inference input 'INPUT0' for model "
             "'onnx_object_int32_int32', got 14"),
        (18, "unexpected number of string elements 17 for inference input 'INPUT0' for model "
             "'onnx_object_int32_int32', expecting 16"),
    ],
)  # fmt: skip
def test_string_element_count_is_checked_in_tritons_words(
    sclient: Client, sent: int, message: str
) -> None:
    data = np.array([[str(i) for i in range(sent)]], dtype=object)
    full = np.array([[str(i) for i in range(16)]], dtype=object)
    tensors = []
    for name, array in (("INPUT0", data), ("INPUT1", full)):
        tensor = sclient.module.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        tensor.set_shape([1, 16])  # claim a shape the data does not fill
        tensors.append(tensor)
    with pytest.raises(InferenceServerException, match=message) as info:
        sclient.infer("onnx_object_int32_int32", tensors)
    assert info.value.status() == sclient.status(http=400, grpc="INVALID_ARGUMENT")


def test_string_models_complete_their_config_too(tmp_path: Path) -> None:
    add_sub(tmp_path, "m", "BYTES", ("BYTES", "INT32"), [4], config=False)
    with running(settings(tmp_path)) as server, Client("grpc", url(server, "grpc")) as client:
        config = client.config("m")
        assert config.max_batch_size == 4
        assert [(t.name, list(t.dims)) for t in config.input] == [("INPUT0", [4]), ("INPUT1", [4])]
        a = np.array([["1", "2", "3", "4"]], dtype=object)
        got = _infer(client, "m", {"INPUT0": a, "INPUT1": a}, outputs=("OUTPUT0", "OUTPUT1"))
        assert got["OUTPUT0"].tolist() == [[b"2", b"4", b"6", b"8"]]
