"""An asynchronous instance (a device's: its launch returns at once, its pass tells when it is
done) behind both front ends: a lone request is launched and watched by the event loop,
requests that come together are launched by the instance's thread, and a request that fails
in its launch, on the device, or in the query of its state gets a clear error while every
other request, before and after, is answered (tests/frontends/device_backend.py)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from bertserve.backends import base
from bertserve.batching import scheduler as scheduler_module
from bertserve.server import Server
from tests.frontends import device_backend
from tests.frontends.conftest import running, settings, url
from tests.frontends.protocols import PROTOCOLS, Client

CONFIG = """name: "dev"
backend: "device_like"
max_batch_size: 8
dynamic_batching { }
input { name: "INPUT0" data_type: TYPE_INT64 dims: [4] }
output { name: "OUTPUT0" data_type: TYPE_INT64 dims: [4] }
instance_group { count: 1 kind: KIND_CPU }
"""

#: The same model on two instances: two clients at a time each get one from the loop.
CONFIG2 = CONFIG.replace('name: "dev"', 'name: "dev2"').replace("count: 1", "count: 2")

LOOP = "bertserve-under-test"  # the thread tests.frontends.conftest.running runs the loop on


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("device-like") / "repo"
    (repo / "dev" / "1").mkdir(parents=True)
    (repo / "dev" / "config.pbtxt").write_text(CONFIG)
    (repo / "dev" / "1" / "model.device").write_bytes(b"")
    (repo / "dev2" / "1").mkdir(parents=True)
    (repo / "dev2" / "config.pbtxt").write_text(CONFIG2)
    (repo / "dev2" / "1" / "model.device").write_bytes(b"")
    with pytest.MonkeyPatch.context() as patch:
        # The loop watches a pass for as long as it takes: a busy test machine's pauses must
        # not hand it to the thread (tests/server/test_batching.py covers that hand-over).
        patch.setattr(scheduler_module, "WATCH_NS", 10**10)
        patch.setattr(scheduler_module, "BUSY_NS", 10**10)
        patch.setitem(base._BACKENDS, "device_like",
                      "tests.frontends.device_backend:DeviceLikeBackend")  # fmt: skip
        with running(settings(repo)) as served:
            yield served
    base._loaded.pop("device_like", None)


@pytest.fixture(params=PROTOCOLS)
def client(server: Server, request: pytest.FixtureRequest) -> Iterator[Client]:
    with Client(request.param, url(server, request.param)) as c:
        yield c


def _infer_apart(client: Client, first: float, rows: int = 1) -> None:
    """_infer on a client of its own (tritonclient's sync clients are not shared across
    threads)."""
    with Client(client.protocol, client.url) as own:
        _infer(own, first, rows)


def _infer(client: Client, first: float, rows: int = 1, model: str = "dev") -> np.ndarray:
    x = np.arange(rows * 4, dtype=np.int64).reshape(rows, 4) + 100
    x[0, 0] = first
    answer = client.infer(model, client.inputs({"INPUT0": x}))
    out = answer.as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, x * 2)
    return out


def _entries(first: float) -> list[tuple[str, str]]:
    return [(what, thread) for what, value, thread in device_backend.LOG if value == first]


def test_a_lone_request_is_launched_and_watched_by_the_loop(client: Client) -> None:
    for i, first in enumerate((1.0, 2.0, 3.0)):  # each finds the model idle again
        first += 10 * PROTOCOLS.index(client.protocol)
        _infer(client, first, rows=1 + i)
        assert _entries(first) == [("launch", LOOP), ("wait", LOOP)]


def test_two_clients_on_two_instances_are_each_launched_and_watched_by_the_loop(
    client: Client,
) -> None:
    """Light load: never more requests in flight than the model has instances, so each
    request finds one idle and the loop launches and watches it, none a thread."""
    base_value = 3000.0 + 1000 * PROTOCOLS.index(client.protocol)

    def one_client(offset: int) -> list[float]:
        values = [base_value + offset + 2 * i for i in range(12)]
        with Client(client.protocol, client.url) as own:
            for value in values:
                _infer(own, value, model="dev2")
        return values

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        values = [v for vs in pool.map(one_client, (0, 1)) for v in vs]
    for value in values:
        assert _entries(value) == [("launch", LOOP), ("wait", LOOP)]


def test_requests_that_come_together_are_answered_each_with_its_own(client: Client) -> None:
    base_value = 1000.0 + 1000 * PROTOCOLS.index(client.protocol)
    values = [base_value + i for i in range(48)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda v: _infer_apart(client, v, rows=1 + int(v) % 3), values))
    threads = {thread for v in values for what, thread in _entries(v) if what == "launch"}
    assert any(t.startswith("dev-instance") for t in threads)  # under load: the thread


@pytest.mark.parametrize(
    ("first", "status", "message"),
    [
        (-1.0, (400, "INVALID_ARGUMENT"), "INPUT0 starts with -1"),
        (-2.0, (500, "INTERNAL"), "device fault: an illegal memory access"),
        (-3.0, (500, "INTERNAL"), "device fault"),
    ],
    ids=["launch", "device", "query"],
)
def test_a_failing_pass_fails_its_request_alone(
    client: Client, first: float, status: tuple[int, str], message: str
) -> None:
    _infer(client, 7.0)
    with pytest.raises(InferenceServerException, match=message) as caught:
        _infer(client, first)
    assert caught.value.status() == client.status(http=status[0], grpc=status[1])
    for value in (8.0, 9.0):
        _infer(client, value, rows=2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # and in company
        futures = [pool.submit(_infer_apart, client, v) for v in (20.0, first, 21.0, 22.0)]
        errors = [f.exception() for f in futures]
    assert [e is None for e in errors] == [True, False, True, True]
    assert message in str(errors[1])
