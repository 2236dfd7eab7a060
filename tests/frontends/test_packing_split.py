"""A packing model behind both front ends: requests whose rows do not fit a batch's token
budget whole are split across batches (`Scheduler._split`), and every client, over HTTP and
gRPC alike, gets its own rows back in order, as the model computes each row alone; a bad
request in the same burst fails alone with a clear error and the others are answered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tritonclient.utils import InferenceServerException  # noqa: E402

from bertserve.server import Server  # noqa: E402
from tests.frontends.conftest import running, settings, url  # noqa: E402
from tests.frontends.protocols import Client  # noqa: E402
from tests.gpu.conftest import write_checkpoint  # noqa: E402
from tests.gpu.test_packed_engine import _reference_rows, _rows  # noqa: E402

#: A 64-token budget; requests of two 20-token rows (40 tokens): two never fit whole.
CONFIG = """name: "pk"
backend: "bertserve_torch"
max_batch_size: 16
dynamic_batching { max_queue_delay_microseconds: 1000000 }
instance_group { count: 1 kind: KIND_CPU }
parameters { key: "packing" value { string_value: "true" } }
parameters { key: "seq_buckets" value { string_value: "32" } }
parameters { key: "token_buckets" value { string_value: "32,64" } }
"""


@pytest.fixture(scope="module")
def packing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    repo = tmp_path_factory.mktemp("packing")
    model = write_checkpoint(repo / "pk" / "1", "bert")
    (repo / "pk" / "config.pbtxt").write_text(CONFIG)
    with running(settings(repo)) as server:
        yield server, model


def _counts(server: Server) -> tuple[int, int]:
    with Client("grpc", url(server, "grpc")) as client:
        stats = client.statistics("pk").model_stats[0]
        return stats.execution_count, stats.inference_count


def test_split_requests_come_back_whole_over_both_protocols(packing: tuple[Server, Any]) -> None:
    server, model = packing
    rng = np.random.default_rng(21)
    feeds = [_rows(rng, [20, 20], 32, "bert") for _ in range(4)]
    bad = _rows(rng, [20, 20], 32, "bert")
    bad["input_ids"][1, 3] = 100  # the checkpoint's vocabulary holds 0..99
    protocols = ["http", "grpc", "http", "grpc"]
    results: dict[int, Any] = {}
    errors: dict[int, Exception] = {}

    def send(i: int, protocol: str, feed: dict[str, np.ndarray]) -> None:
        with Client(protocol, url(server, protocol)) as client:
            try:
                answer = client.infer("pk", client.inputs(feed))
                results[i] = {n: answer.as_numpy(n) for n in ("start_logits", "end_logits")}
            except InferenceServerException as exc:
                errors[i] = exc

    before = _counts(server)
    threads = [threading.Thread(target=send, args=(0, "http", feeds[0]))]
    threads[0].start()
    time.sleep(0.1)  # the first waits in the queue (1 s window) when the others arrive
    threads += [
        threading.Thread(target=send, args=(i, p, f))
        for i, (p, f) in enumerate(zip(protocols, feeds, strict=True))
        if i
    ]
    threads.append(threading.Thread(target=send, args=(9, "grpc", bad)))
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(30)

    assert set(errors) == {9}, errors  # the bad request alone fails, before any batch
    assert "input_ids" in str(errors[9]) and "INVALID_ARGUMENT" in str(errors[9].status())
    for i, feed in enumerate(feeds):
        for r, (start, end) in enumerate(_reference_rows(model, feed)):
            np.testing.assert_allclose(results[i]["start_logits"][r, :20], start, atol=2e-4)
            np.testing.assert_allclose(results[i]["end_logits"][r, :20], end, atol=2e-4)
            assert np.all(results[i]["start_logits"][r, 20:] == -10000.0)
    executions, inferences = (a - b for a, b in zip(_counts(server), before, strict=True))
    assert inferences == 8  # each row counted once, whichever batch it ran in
    # 40 + one row of the next (60), its other row + 40 (60), then the last 40: whole
    # requests only would take four batches.
    assert executions == 3

    # And the server goes on serving both protocols.
    for protocol in ("http", "grpc"):
        with Client(protocol, url(server, protocol)) as client:
            again = client.infer("pk", client.inputs(feeds[0])).as_numpy("end_logits")
            np.testing.assert_allclose(again, results[0]["end_logits"], atol=2e-4)
