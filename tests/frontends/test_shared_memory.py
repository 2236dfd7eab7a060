"""System shared memory over HTTP and gRPC with tritonclient.utils.shared_memory, as Triton's own
shared memory tests use it: register, status, unregister, inputs read from and outputs written
to regions, and tritonserver's answers to each mistake."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import (
    InferenceServerException,
    serialize_byte_tensor,
    serialized_byte_size,
)

from bertserve.server import Server
from bertserve.shared_memory import cuda_available
from tests.frontends.conftest import running, settings, url
from tests.frontends.protocols import Client
from tests.triton_models import add_sub, identity

PAGE = os.sysconf("SC_PAGE_SIZE")
SIZE = 64  # 16 INT32


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("shm")
    add_sub(repo, "simple", "INT32", ("INT32", "INT32"), [16], max_batch_size=8)
    identity(repo, "strings", "BYTES", [-1])
    with running(settings(repo, allow_client_shm=True)) as server:
        yield server


@pytest.fixture(params=["http", "grpc"])
def client(shm_server: Server, request: pytest.FixtureRequest) -> Iterator[Client]:
    with Client(request.param, url(shm_server, request.param)) as c:
        yield c
        c.unregister_system_shared_memory()


class Regions:
    """Regions this test created (destroyed after it, whatever happens)."""

    def __init__(self) -> None:
        self.handles: list[object] = []

    def create(self, name: str, size: int, pid: bool = True) -> object:
        key = f"/{name}_{os.getpid()}" if pid else f"/{name}"
        handle = shm.create_shared_memory_region(name, key, size)
        self.handles.append(handle)
        return handle

    def key(self, handle: object) -> str:
        return handle._shm_key  # type: ignore[attr-defined]


@pytest.fixture()
def regions() -> Iterator[Regions]:
    made = Regions()
    yield made
    for handle in made.handles:
        shm.destroy_shared_memory_region(handle)


def _status_count(client: Client) -> int:
    status = client.get_system_shared_memory_status()
    return len(status) if client.protocol == "http" else len(status.regions)


def _add_sub_in_shm(client: Client, regions: Regions, offset: int = 0, size: int = SIZE) -> dict:
    """Inputs and outputs of 'simple' in four regions; returns the handles by role."""
    handles = {n: regions.create(n, offset + size) for n in ("in0", "in1", "out0", "out1")}
    for name, handle in handles.items():
        client.register_system_shared_memory(name, regions.key(handle), size, offset=offset)
    shm.set_shared_memory_region(handles["in0"], [np.arange(16, dtype=np.int32)], offset=offset)
    shm.set_shared_memory_region(handles["in1"], [np.ones(16, dtype=np.int32)], offset=offset)
    return handles


def _tensors(client: Client, out_size: int = SIZE, out_offset: int = 0) -> tuple[list, list]:
    module = client.module
    inputs = [module.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in range(2)]
    inputs[0].set_shared_memory("in0", SIZE)
    inputs[1].set_shared_memory("in1", SIZE)
    if module is httpclient:
        outputs = [httpclient.InferRequestedOutput(f"OUTPUT{i}", binary_data=True) for i in (0, 1)]
    else:
        outputs = [grpcclient.InferRequestedOutput(f"OUTPUT{i}") for i in (0, 1)]
    outputs[0].set_shared_memory("out0", out_size, offset=out_offset)
    outputs[1].set_shared_memory("out1", out_size, offset=out_offset)
    return inputs, outputs


def test_inputs_and_outputs_in_shared_memory(client: Client, regions: Regions) -> None:
    handles = _add_sub_in_shm(client, regions)
    assert _status_count(client) == 4
    inputs, outputs = _tensors(client)
    result = client.infer("simple", inputs, outputs=outputs)
    out0 = result.get_output("OUTPUT0")
    assert out0 is not None
    sum_ = shm.get_contents_as_numpy(handles["out0"], np.int32, [1, 16])
    diff = shm.get_contents_as_numpy(handles["out1"], np.int32, [1, 16])
    np.testing.assert_array_equal(sum_, np.arange(16)[None] + 1)
    np.testing.assert_array_equal(diff, np.arange(16)[None] - 1)
    # The data went to the region: the response names the output and carries no data.
    response = client.response(result)
    assert "data" not in response["outputs"][0] and "parameters" not in response["outputs"][0]
    client.unregister_system_shared_memory("out0")
    assert _status_count(client) == 3


def test_a_large_offset_inside_a_large_region(client: Client, regions: Regions) -> None:
    """Triton's test for reads past a region: a page-aligned offset near its end."""
    handles = _add_sub_in_shm(client, regions, offset=PAGE * 3)
    inputs, outputs = _tensors(client)
    client.infer("simple", inputs, outputs=outputs)
    sum_ = shm.get_contents_as_numpy(handles["out0"], np.int32, [1, 16], offset=PAGE * 3)
    np.testing.assert_array_equal(sum_, np.arange(16)[None] + 1)


def test_mixed_shared_memory_and_raw_inputs(client: Client, regions: Regions) -> None:
    _add_sub_in_shm(client, regions)
    inputs, _ = _tensors(client)
    inputs[1].set_data_from_numpy(np.full((1, 16), 2, dtype=np.int32))
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.arange(16)[None] + 2)


def test_strings_in_shared_memory(client: Client, regions: Regions) -> None:
    values = np.array([[b"a\x00b", b"\xff", "h\u00e9".encode()]], dtype=object)
    serialized = serialize_byte_tensor(values)
    size = serialized_byte_size(serialized)
    handle = regions.create("strin", size)
    out = regions.create("strout", size)
    shm.set_shared_memory_region(handle, [serialized])
    client.register_system_shared_memory("strin", regions.key(handle), size)
    client.register_system_shared_memory("strout", regions.key(out), size)
    tensor = client.module.InferInput("INPUT0", [1, 3], "BYTES")
    tensor.set_shared_memory("strin", size)
    requested = client.module.InferRequestedOutput("OUTPUT0")
    requested.set_shared_memory("strout", size)
    client.infer("strings", [tensor], outputs=[requested])
    got = shm.get_contents_as_numpy(out, np.object_, [1, 3])
    assert got.tolist() == values.tolist()


def test_register_status_unregister(client: Client, regions: Regions) -> None:
    handle = regions.create("dummy", 8)
    shm.set_shared_memory_region(handle, [np.array([1, 2], dtype=np.float32)])
    client.unregister_system_shared_memory("dummy")  # not registered: no error
    client.register_system_shared_memory("dummy", regions.key(handle), 8)
    with pytest.raises(InferenceServerException, match="'dummy' already in manager"):
        client.register_system_shared_memory("dummy", regions.key(handle), 8)
    status = client.get_system_shared_memory_status("dummy")
    if client.protocol == "http":
        assert status == [
            {"name": "dummy", "key": regions.key(handle), "offset": 0, "byte_size": 8}
        ]
    else:
        region = status.regions["dummy"]
        assert (region.key, region.offset, region.byte_size) == (regions.key(handle), 0, 8)
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory"):
        client.get_system_shared_memory_status("other")
    client.unregister_system_shared_memory()
    assert _status_count(client) == 0


@pytest.mark.parametrize(
    ("size", "offset"),
    [(SIZE + 1, 0), (SIZE, 1), (1, SIZE), (0, SIZE + 1)],
)
def test_register_out_of_bounds(client: Client, regions: Regions, size: int, offset: int) -> None:
    handle = regions.create("oob", SIZE)
    with pytest.raises(
        InferenceServerException, match="failed to register shared memory region 'oob': invalid"
    ):
        client.register_system_shared_memory("oob", regions.key(handle), size, offset=offset)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("/", "cannot register shared memory region 'r' - invalid shm key '/'"),
        ("///", "cannot register shared memory region 'r' - invalid shm key '///'"),
        (
            "//triton_python_backend_shm_region_x",
            "cannot register shared memory region 'r' with key "
            "'//triton_python_backend_shm_region_x' as the key contains the reserved prefix "
            "'triton_python_backend_shm_region_'",
        ),
        ("/no_such_region_here", "Unable to open shared memory region: '/no_such_region_here'"),
        ("/../etc/passwd", "Unable to open shared memory region: '/../etc/passwd'"),
    ],
)
def test_bad_keys(client: Client, key: str, message: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory("r", key, 16)
    assert message in str(info.value)


def test_output_region_too_small(client: Client, regions: Regions) -> None:
    _add_sub_in_shm(client, regions)
    inputs, outputs = _tensors(client, out_size=SIZE // 2)
    with pytest.raises(InferenceServerException, match="should be at least 64 bytes"):
        client.infer("simple", inputs, outputs=outputs)


@pytest.mark.parametrize(
    ("offset", "size", "message"),
    [
        (SIZE, SIZE, "Invalid offset for shared memory region: 'out0'"),
        (1, SIZE, "Invalid offset + byte size for shared memory region: 'out0'"),
    ],
)
def test_output_offsets_out_of_bounds(
    client: Client, regions: Regions, offset: int, size: int, message: str
) -> None:
    _add_sub_in_shm(client, regions)
    inputs, outputs = _tensors(client, out_size=size, out_offset=offset)
    with pytest.raises(InferenceServerException, match=message.replace("+", r"\+")):
        client.infer("simple", inputs, outputs=outputs)


def test_http_integer_overflow_and_negative_offset(shm_server: Server, regions: Regions) -> None:
    """Over HTTP a client can send any 64-bit number; tritonserver names the overflow."""
    with Client("http", url(shm_server, "http")) as client:
        _add_sub_in_shm(client, regions)
        inputs, outputs = _tensors(client, out_size=2**64 - 32, out_offset=32)
        with pytest.raises(InferenceServerException, match="Integer overflow detected: byte_size"):
            client.infer("simple", inputs, outputs=outputs)
        inputs, outputs = _tensors(client, out_offset=2**64 - 32)
        with pytest.raises(InferenceServerException, match="Invalid offset for shared memory"):
            client.infer("simple", inputs, outputs=outputs)
        client.unregister_system_shared_memory()


def test_input_region_larger_than_the_tensor(client: Client, regions: Regions) -> None:
    _add_sub_in_shm(client, regions)
    big = regions.create("big", 128)
    client.register_system_shared_memory("big", regions.key(big), 128)
    inputs, outputs = _tensors(client)
    inputs[1].set_shared_memory("big", 128)
    with pytest.raises(
        InferenceServerException,
        match="input byte size mismatch for input 'INPUT1' for model 'simple'. Expected 64, got "
        "128",
    ):
        client.infer("simple", inputs, outputs=outputs)


def test_unknown_region(client: Client) -> None:
    tensor = client.module.InferInput("INPUT0", [1, 16], "INT32")
    tensor.set_shared_memory("nowhere", SIZE)
    other = client.module.InferInput("INPUT1", [1, 16], "INT32")
    other.set_data_from_numpy(np.ones((1, 16), np.int32))
    with pytest.raises(InferenceServerException, match="Unable to find shared memory region"):
        client.infer("simple", [tensor, other])


def test_off_by_default_status_still_answers(tmp_path, regions: Regions) -> None:
    identity(tmp_path, "m", "FP32", [-1])
    handle = regions.create("dummy", 8)
    with running(settings(tmp_path)) as server:
        for protocol in ("http", "grpc"):
            with Client(protocol, url(server, protocol)) as client:
                assert _status_count(client) == 0
                for call in (
                    lambda c: c.register_system_shared_memory("dummy", regions.key(handle), 8),
                    lambda c: c.unregister_system_shared_memory("dummy"),
                ):
                    with pytest.raises(
                        InferenceServerException, match="Client shared memory is disabled"
                    ):
                        call(client)
                assert _status_count(client) == 0


@pytest.mark.skipif(cuda_available(), reason="a CUDA GPU is visible: tests/gpu covers it")
def test_cuda_regions_without_a_gpu(client: Client) -> None:
    with pytest.raises(
        InferenceServerException,
        match="failed to register CUDA shared memory region: 'r', GPUs not supported",
    ):
        client.register_cuda_shared_memory("r", base64.b64encode(b"\x01" * 64), 0, 16)
    assert "cuda_shared_memory" not in client.server_metadata().extensions
