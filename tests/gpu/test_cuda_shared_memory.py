"""CUDA shared memory over HTTP and gRPC with tritonclient.utils.cuda_shared_memory: inputs read
from and outputs written to device regions of another process (CUDA IPC), so the server runs
as a process of its own (CUDA refuses to open an IPC handle in the process that made it).
Runs only where a CUDA GPU and runtime are visible; elsewhere registration answers
tritonserver's "GPUs not supported" (tests/frontends/test_http.py covers that answer's
path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bertserve.launch import ServerProcess
from bertserve.shared_memory import cuda_available
from tests.conftest import start_server
from tests.frontends.protocols import Client
from tests.triton_models import identity

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU and runtime"),
]


@pytest.fixture(scope="module")
def cuda_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo: Path = tmp_path_factory.mktemp("cudashm")
    identity(repo, "onnx_zero_1_float32", "FP32", [-1])
    server = start_server(repo, extra=["--allow-client-shm", "true"])
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_in_cuda_shared_memory(
    cuda_server: ServerProcess, protocol: str
) -> None:
    import tritonclient.utils.cuda_shared_memory as cudashm

    data = np.arange(16, dtype=np.float32)[None]
    size = data.nbytes
    source = cudashm.create_shared_memory_region("cuda_in", size, 0)
    target = cudashm.create_shared_memory_region("cuda_out", size, 0)
    try:
        cudashm.set_shared_memory_region(source, [data])
        with Client(protocol, cuda_server.address(protocol)) as client:
            client.register_cuda_shared_memory("cuda_in", cudashm.get_raw_handle(source), 0, size)
            client.register_cuda_shared_memory("cuda_out", cudashm.get_raw_handle(target), 0, size)
            status = client.get_cuda_shared_memory_status()
            assert (len(status) if protocol == "http" else len(status.regions)) == 2
            tensor = client.module.InferInput("INPUT0", [1, 16], "FP32")
            tensor.set_shared_memory("cuda_in", size)
            output = client.module.InferRequestedOutput("OUTPUT0")
            output.set_shared_memory("cuda_out", size)
            client.infer("onnx_zero_1_float32", [tensor], outputs=[output])
            got = cudashm.get_contents_as_numpy(target, np.float32, [1, 16])
            np.testing.assert_array_equal(got, data)
            client.unregister_cuda_shared_memory()
    finally:
        cudashm.destroy_shared_memory_region(source)
        cudashm.destroy_shared_memory_region(target)
