"""The whole server in this process (`bertserve.server.Server` on free ports), and a client
fixture per protocol so each scenario is written once and run over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import uvloop

from bertserve.server import Server
from bertserve.settings import ServerSettings
from tests.conftest import TINY, copy_model
from tests.frontends.protocols import AIO, PROTOCOLS, Client

#: The limits of the shared server, small enough for the tests to cross.
MAX_HTTP_BODY = MAX_GRPC_MESSAGE = 1024 * 1024

#: config.pbtxt texts for copies of the tiny model (tests.conftest.copy_model).
BATCH2 = 'platform: "onnxruntime_onnx"\nmax_batch_size: 2\n'
SLOW = 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n' + (
    "dynamic_batching { max_queue_delay_microseconds: 1500000 }\n"
)
_WARM_INPUT = '  inputs {{ key: "{}" value {{ data_type: TYPE_INT64 dims: [16] {}: true }} }}\n'
CONFIGS = {
    "tiny": None,  # as built
    "slowbatch": 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    "dynamic_batching { max_queue_delay_microseconds: 300000 }\n",
    "queue1": 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    "dynamic_batching { default_queue_policy { max_queue_size: 1 } }\n",
    # Listing the tensors keeps max_batch_size 0 (Triton's auto-complete would batch: 4).
    "nobatch": 'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
    + "".join(
        f'input {{ name: "{n}" data_type: TYPE_INT64 dims: [-1, -1] }}\n'
        for n in ("input_ids", "attention_mask", "token_type_ids")
    )
    + "".join(
        f'output {{ name: "{n}" data_type: TYPE_FP32 dims: [-1, -1] }}\n'
        for n in ("start_logits", "end_logits")
    ),
    "warm": 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
    'model_warmup { name: "w" batch_size: 2 count: 2\n'
    + _WARM_INPUT.format("input_ids", "zero_data")
    + _WARM_INPUT.format("attention_mask", "random_data")
    + _WARM_INPUT.format("token_type_ids", "zero_data")
    + "}\n",
    "versions": 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\nversion_policy { all {} }\n',
}


def settings(*repos: Path, **changes: Any) -> ServerSettings:
    """Every service on a free port of 127.0.0.1."""
    free = ServerSettings(model_repositories=list(repos), http_port=0, grpc_port=0, metrics_port=0)
    return replace(free, **changes)


def url(server: Server, service: str) -> str:
    return f"127.0.0.1:{server.ports[service]}"


@contextlib.contextmanager
def running(config: ServerSettings) -> Iterator[Server]:
    """A started and loaded `Server` on a uvloop in a thread of its own (as `bertserve serve`
    runs it), so that a test's blocking clients can call it; stopped with a drain after."""
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bertserve-under-test")
    thread.start()
    server = Server(config)
    server.test_loop = loop  # type: ignore[attr-defined]  # (for tests that add services)
    try:
        asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result()
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@pytest.fixture(scope="session")
def served(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the scenarios of every front-end module: the tiny preset under several
    configs, and two versions of it."""
    repo = tmp_path_factory.mktemp("frontends") / "repo"
    repo.mkdir()
    for name, config in CONFIGS.items():
        if config is None:
            shutil.copytree(tiny_repo / TINY, repo / name)
            text = (tiny_repo / TINY / "config.pbtxt").read_text().replace(TINY, name)
            (repo / name / "config.pbtxt").write_text(text)
        else:
            copy_model(tiny_repo, TINY, repo, name, config)
    shutil.copytree(repo / "versions" / "1", repo / "versions" / "2")
    limits = {"http_max_input_size": MAX_HTTP_BODY, "grpc_max_message_size": MAX_GRPC_MESSAGE}
    with running(settings(repo, **limits)) as server:
        yield server


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture()
def client(served: Server, protocol: str) -> Iterator[Client]:
    """A sync tritonclient client of each protocol on the shared server."""
    with Client(protocol, url(served, protocol)) as c:
        yield c


@pytest.fixture()
async def aio_client(served: Server, protocol: str) -> AsyncIterator[Any]:
    """An asyncio tritonclient client of each protocol on the shared server."""
    c = AIO[protocol].InferenceServerClient(url(served, protocol))
    yield c
    await c.close()


@pytest.fixture()
def http(served: Server) -> Iterator[Client]:
    with Client("http", url(served, "http")) as c:
        yield c


@pytest.fixture()
def grpc_client(served: Server) -> Iterator[Client]:
    with Client("grpc", url(served, "grpc")) as c:
        yield c
