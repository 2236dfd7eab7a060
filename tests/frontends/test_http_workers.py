"""`--http-workers`: HTTP served by worker processes, the engine in the test's process.

The same requests, good and bad, get the same answers (status, headers, body) from a server
with workers as from one without them, over worker processes and over workers run on
threads of this process (the supervisor's `launch` seam, so the worker's code is measured
here too); tritonclient's calls work unchanged; shared memory, access rules, a client that
goes away, a worker that dies and a stop with requests in flight behave as they do without
workers; requests and responses cross the channel unchanged."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
import uvloop
from tritonclient.utils import InferenceServerException

from bertserve.endpoints.http import READS_BODY, ROUTES, HttpApp
from bertserve.endpoints.http_worker import serve_worker
from bertserve.endpoints.http_workers import HttpWorkers
from bertserve.server import Server, bind
from bertserve.settings import Restriction
from tests.conftest import TINY, copy_model
from tests.frontends.conftest import MAX_HTTP_BODY, SLOW, running, settings, url
from tests.frontends.messages import good, json_body, post
from tests.frontends.protocols import Client, feed, inputs, reference

WORKERS = 2


@pytest.fixture(scope="module")
def workers_repo(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("workers")
    shutil.copytree(tiny_repo / TINY, repo / "tiny")
    text = (tiny_repo / TINY / "config.pbtxt").read_text().replace(TINY, "tiny")
    (repo / "tiny" / "config.pbtxt").write_text(text)
    copy_model(tiny_repo, TINY, repo, "slow", SLOW)
    return repo


@pytest.fixture(scope="module")
def workers(workers_repo: Path) -> Iterator[Server]:
    config = settings(workers_repo, http_workers=WORKERS, http_max_input_size=MAX_HTTP_BODY,
                      allow_client_shm=True)  # fmt: skip
    with running(config) as server:
        yield server


@pytest.fixture(scope="module")
def alone(workers_repo: Path) -> Iterator[Server]:
    """The same models and limits, HTTP in the engine's process."""
    config = settings(workers_repo, http_max_input_size=MAX_HTTP_BODY, allow_client_shm=True)
    with running(config) as server:
        yield server


def test_the_server_runs_the_workers_it_was_asked_for(workers: Server) -> None:
    assert workers.http_workers is not None
    pids = workers.http_workers.pids
    assert len(set(pids)) == WORKERS and os.getpid() not in pids
    for pid in pids:
        os.kill(pid, 0)  # alive


def test_tritonclient_infers_through_the_workers(workers: Server, tiny_repo: Path) -> None:
    data = feed(batch=3)
    expected = reference(tiny_repo, data)
    with Client("http", url(workers, "http")) as client:
        for binary in (True, False):
            result = client.infer("tiny", inputs(httpclient, data, binary))
            start, end = result.as_numpy("start_logits"), result.as_numpy("end_logits")
            np.testing.assert_allclose(start, expected[0], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(end, expected[1], rtol=1e-4, atol=1e-4)
    with Client("grpc", url(workers, "grpc")) as grpc_client:
        counted = grpc_client.statistics("tiny").model_stats[0].inference_count
    assert counted >= 6  # the engine's own statistics count what the workers handed over


class ThreadWorker:
    """A worker on a thread of the test's process (the supervisor's `launch` seam): the
    worker's front end measured and debugged in process, as the other front ends are."""

    def __init__(self, listen: socket.socket, channel: socket.socket) -> None:
        self.pid = os.getpid()
        self.code = 0
        self._channel = channel
        # A socket of its own: the worker's uvicorn closes what it serves on when it stops.
        self._thread = threading.Thread(target=self._run, args=(listen.dup(), channel))
        self._thread.start()

    def _run(self, listen: socket.socket, channel: socket.socket) -> None:
        self.code = uvloop.run(serve_worker(listen, channel))

    def wait(self, timeout: float | None = None) -> int:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired("worker thread", timeout or 0)
        return self.code

    def kill(self) -> None:
        self._channel.shutdown(socket.SHUT_RDWR)  # the worker sees its engine gone, and stops


@pytest.fixture(scope="module")
def threaded(alone: Server) -> Iterator[str]:
    """Two workers on threads of this process in front of `alone`'s engine: their address."""
    loop = alone.test_loop  # type: ignore[attr-defined]
    config = replace(alone.settings, http_workers=2)
    listen = bind("127.0.0.1", 0)
    workers = HttpWorkers(HttpApp(alone.engine, config), config, listen, launch=ThreadWorker)
    asyncio.run_coroutine_threadsafe(workers.start(), loop).result(60)
    yield f"127.0.0.1:{listen.getsockname()[1]}"
    asyncio.run_coroutine_threadsafe(workers.stop(), loop).result(60)


@pytest.fixture(params=["processes", "threads"])
def front(request: pytest.FixtureRequest) -> str:
    """The address of workers in processes (as served) or on threads (in process)."""
    if request.param == "threads":
        address: str = request.getfixturevalue("threaded")
        return address
    return url(request.getfixturevalue("workers"), "http")


def _same(
    workers: str,
    alone: Server,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, bytes]:
    a = post(workers, path, body, headers, method)
    b = post(url(alone, "http"), path, body, headers, method)
    assert a[0] == b[0], (path, a[1], b[1])
    assert a[1] == b[1], path
    for header in ("Content-Type", "Inference-Header-Content-Length", "Content-Encoding",
                   "Retry-After", "Allow"):  # fmt: skip
        assert a[2].get(header) == b[2].get(header), (path, header)
    return a[0], a[1]


READS = [
    ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/tiny"), ("GET", "/v2/models/tiny/versions/1"),
    ("GET", "/v2/models/tiny/ready"), ("GET", "/v2/models/tiny/config"),
    ("GET", "/v2/models/nope"), ("GET", "/v2/models/nope/config"), ("GET", "/v2/models"),
    ("GET", "/v2/nothing/here"), ("DELETE", "/v2/repository/index"),
    ("POST", "/v2/repository/index"), ("GET", "/v2/systemsharedmemory/status"),
    ("GET", "/v2/systemsharedmemory/region/none/status"), ("GET", "/v2/cudasharedmemory/status"),
    ("GET", "/v2/models/tiny/infer"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), READS)
def test_every_other_endpoint_answers_as_without_workers(
    front: str, alone: Server, method: str, path: str
) -> None:
    _same(front, alone, path, method=method)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v2/health/ready"), ("GET", "/v2/models/tiny")]
)
def test_a_body_no_endpoint_reads_is_not_refused_for_its_size(
    front: str, alone: Server, method: str, path: str
) -> None:
    """Over the input size limit, on an endpoint that never reads it: answered as without
    workers (200), not refused for a size that does not matter there."""
    status, _ = _same(front, alone, path, b"x" * (MAX_HTTP_BODY + 1), method=method)
    assert status == 200


def test_the_workers_forward_a_body_exactly_where_a_handler_reads_one() -> None:
    """READS_BODY, which tells a worker what to forward, against the handlers' own code."""
    for _, _, handler in ROUTES:
        reads = "self._body(" in inspect.getsource(handler)
        assert (handler in READS_BODY) == reads, handler.__name__


BINARY = json_body(good())
_GZIP = {"Content-Encoding": "gzip"}
INFERS = {
    "json": (json_body(good()), {}),
    "json, outputs asked for": (json_body(good(), outputs=[{"name": "end_logits"}]), {}),
    "binary outputs": (json_body(good(), parameters={"binary_data_output": True}), {}),
    "gzip in, gzip out": (gzip.compress(json_body(good())), {**_GZIP, "Accept-Encoding": "gzip"}),
    "deflate out": (json_body(good()), {"Accept-Encoding": "deflate;q=0.9, gzip;q=0.1"}),
    "a wrong shape": (json_body(good(shape=[1, 5])), {}),
    "a wrong datatype": (json_body(good(datatype="FP32", values=[1.0] * 4)), {}),
    "a missing input": (orjson.dumps({"inputs": []}), {}),
    "not JSON": (b"{inputs", {}),
    "a bad header length": (json_body(good()), {"Inference-Header-Content-Length": "+5"}),
    "a header length past the body": (
        json_body(good()), {"Inference-Header-Content-Length": "99999"}
    ),
    "not gzip": (b"plain", _GZIP),
    "an unknown encoding": (json_body(good()), {"Content-Encoding": "br"}),
    "a body over the limit": (b" " * (MAX_HTTP_BODY + 1), {}),
    "a raw body for three inputs": (b"\0" * 32, {"Inference-Header-Content-Length": "0"}),
    "an unknown output": (json_body(good(), outputs=[{"name": "nope"}]), {}),
    "ids out of the vocabulary": (json_body(good(values=[10**9] * 4)), {}),
}  # fmt: skip


@pytest.mark.parametrize("case", INFERS)
def test_infer_requests_good_and_bad_answer_as_without_workers(
    front: str, alone: Server, case: str
) -> None:
    body, headers = INFERS[case]
    for path in ("/v2/models/tiny/infer", "/v2/models/tiny/versions/1/infer",
                 "/v2/models/tiny/versions/9/infer", "/v2/models/nope/infer"):  # fmt: skip
        _same(front, alone, path, body, headers)
    status, _ = _same(front, alone, "/v2/models/tiny/infer", json_body(good()))
    assert status == 200  # and the workers keep serving


def test_shared_memory_through_the_workers(workers: Server) -> None:
    data = feed(batch=1)
    key = f"/bertserve_workers_{os.getpid()}"
    size = sum(a.nbytes for a in data.values())
    handle = shm.create_shared_memory_region("in", key, size)
    try:
        with Client("http", url(workers, "http")) as client:
            offset = 0
            tensors = []
            for name, array in data.items():
                shm.set_shared_memory_region(handle, [array], offset)
                tensor = httpclient.InferInput(name, list(array.shape), "INT64")
                tensor.set_shared_memory("in", array.nbytes, offset)
                tensors.append(tensor)
                offset += array.nbytes
            client.register_system_shared_memory("in", key, size)
            # registered through one worker, used through any: the registry is the engine's
            for _ in range(2 * WORKERS):
                with Client("http", url(workers, "http")) as other:
                    by_region = other.infer("tiny", tensors).as_numpy("start_logits")
                    by_value = other.infer("tiny", inputs(httpclient, data)).as_numpy(
                        "start_logits"
                    )
                    np.testing.assert_array_equal(by_region, by_value)
            (status,) = client.get_system_shared_memory_status("in")
            assert status["name"] == "in" and int(status["byte_size"]) == size
            client.unregister_system_shared_memory("in")
    finally:
        shm.destroy_shared_memory_region(handle)


def test_a_restricted_api_is_refused_by_the_worker(workers_repo: Path) -> None:
    rule = Restriction(apis=frozenset({"inference"}), key="infer-key", value="s3cret")
    config = settings(workers_repo, http_workers=1, http_restricted_apis=(rule,))
    with running(config) as server, Client("http", url(server, "http")) as client:
        with pytest.raises(InferenceServerException, match="This API is restricted"):
            client.infer("tiny", inputs(httpclient, feed()))
        allowed = client.infer("tiny", inputs(httpclient, feed()), headers={"infer-key": "s3cret"})
        assert allowed.as_numpy("start_logits") is not None


def _slow(server: Server) -> tuple[int, int]:
    with Client("grpc", url(server, "grpc")) as client:
        stats = client.statistics("slow").model_stats[0]
        return stats.execution_count, stats.inference_stats.fail.count


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_a_request_whose_client_has_gone_is_not_run(
    request: pytest.FixtureRequest, kind: str
) -> None:
    """The slow model queues a request for 1.5 s; its client goes away after 0.3 s."""
    engine: Server = request.getfixturevalue("workers" if kind == "processes" else "alone")
    address = url(engine, "http") if kind == "processes" else request.getfixturevalue("threaded")
    executed, failed = _slow(engine)
    body = json_body(good())
    host, port = address.split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)  # queued in the engine's process, waiting out the 1.5 s window
    deadline = time.monotonic() + 10
    while _slow(engine)[1] == failed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _slow(engine)[1] == failed + 1  # withdrawn: recorded as a failure (canceled)
    time.sleep(1.6)
    assert _slow(engine)[0] == executed


def test_a_worker_that_dies_is_replaced_and_the_others_serve_on(workers_repo: Path) -> None:
    with running(settings(workers_repo, http_workers=2)) as server:
        assert server.http_workers is not None
        victim = server.http_workers.pids[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in server.http_workers.pids and time.monotonic() < deadline:
            # meanwhile every new connection is served by the survivor
            assert post(url(server, "http"), "/v2/models/tiny/infer", json_body(good()))[0] == 200
            time.sleep(0.05)
        pids = server.http_workers.pids
        assert victim not in pids and len(pids) == 2
        for pid in pids:
            os.kill(pid, 0)
        for _ in range(8):
            assert post(url(server, "http"), "/v2/models/tiny/infer", json_body(good()))[0] == 200


def test_a_stop_finishes_what_the_workers_hold_and_ends_them(workers_repo: Path) -> None:
    answers: list[int] = []
    with running(settings(workers_repo, http_workers=2)) as server:
        assert server.http_workers is not None
        pids = server.http_workers.pids
        sender = threading.Thread(
            target=lambda: answers.append(
                post(url(server, "http"), "/v2/models/slow/infer", json_body(good()))[0]
            )
        )
        sender.start()
        time.sleep(0.3)  # queued behind the 1.5 s batching window when the stop begins
    sender.join(10)
    assert answers == [200]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_workers_log_as_the_server_was_told(workers_repo: Path, tmp_path: Path) -> None:
    """--log-file, --log-format and --log-verbose reach the worker processes: their lines go
    to the server's file, in its layout, with their own pids."""
    log_file = tmp_path / "server.log"
    config = settings(workers_repo, http_workers=2, log_file=str(log_file),
                      log_format="ISO8601", log_verbose=1)  # fmt: skip
    with running(config) as server:
        assert server.http_workers is not None
        pids = server.http_workers.pids
        assert post(url(server, "http"), "/v2/models/tiny/infer", json_body(good()))[0] == 200
    lines = log_file.read_text().splitlines()
    for index, pid in enumerate(pids):
        (line,) = [x for x in lines if f"HTTP worker {index} stopped" in x]
        assert re.fullmatch(
            rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ I {pid} http_worker\.py:\d+\] HTTP worker "
            rf"{index} stopped",
            line,
        ), line


def test_requests_and_responses_cross_the_channel_unchanged() -> None:
    """Every kind of tensor the codecs make: numbers of each width, BYTES (numpy objects),
    empty ones, data left flat when it did not fill its shape, strided views."""
    from bertserve.endpoints.http_bridge import (
        pack_request,
        pack_response,
        unpack_request,
        unpack_response,
    )
    from bertserve.messages import (
        InferInput,
        InferOutput,
        InferRequest,
        InferResponse,
        RequestedOutput,
    )

    body = np.arange(48, dtype=np.int64).tobytes()
    tensors = [
        ("ids", "INT64", (2, 3), np.frombuffer(body, np.int64, 6).reshape(2, 3)),
        ("half", "FP16", (4,), np.array([1.5, -2, 0, 65504], np.float16)),
        ("text", "BYTES", (2,), np.array([b"a", b"\x00\xff"], dtype=object)),
        ("none", "FP32", (0, 5), np.zeros((0, 5), np.float32)),
        ("flat", "INT32", (3, 3), np.frombuffer(b"\x01\x02\x03", np.uint8)),
        ("view", "FP32", (2, 2), np.arange(16, dtype=np.float32).reshape(4, 4)[::2, ::2]),
    ]
    inputs = [InferInput(n, d, s, a) for n, d, s, a in tensors]
    asked = [RequestedOutput("y", True, {"k": 1}, 3)]
    request = InferRequest("m", "2", inputs, "id-1", asked, {"p": [1, "x"]}, 5000, True, 1, False)
    back = unpack_request(pickle.loads(pickle.dumps(pack_request(request), protocol=5)))
    assert (back.model_name, back.model_version, back.id, back.parameters) == (
        "m",
        "2",
        "id-1",
        {"p": [1, "x"]},
    )
    assert (back.timeout_us, back.binary_outputs, back.priority, back.raw) == (5000, True, 1, False)
    assert back.outputs == asked
    for sent, got in zip(inputs, back.inputs, strict=True):
        assert (got.name, got.datatype, got.shape) == (sent.name, sent.datatype, sent.shape)
        assert got.data.dtype == sent.data.dtype and got.data.shape == sent.data.shape
        np.testing.assert_array_equal(got.data, sent.data)
    outputs = [InferOutput(n, d, s, a) for n, d, s, a in tensors]
    response = InferResponse("m", "2", outputs, "id-1", {"q": True})
    again = unpack_response(pickle.loads(pickle.dumps(pack_response(response), protocol=5)))
    assert (again.model_name, again.id, again.parameters) == ("m", "id-1", {"q": True})
    for sent, got in zip(outputs, again.outputs, strict=True):
        assert (got.name, got.datatype, got.shape) == (sent.name, sent.datatype, sent.shape)
        np.testing.assert_array_equal(got.data, sent.data)
