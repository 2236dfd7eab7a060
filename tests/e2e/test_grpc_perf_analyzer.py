"""Triton's real perf_analyzer against a running bertserve over gRPC: sync, async and
streaming, and a concurrency sweep, each with the server-side breakdown filled in from the
ModelStatistics RPC. As over HTTP (test_perf_analyzer.py), no speed is asserted here."""

from __future__ import annotations

from typing import Any

import pytest

from bertserve.perf.analyzer import profile
from bertserve.perf.results import Measurement
from tests.conftest import TINY, ServerProcess, needs_perf_analyzer
from tests.e2e.test_perf_analyzer import SEQ, WINDOWS, assert_plausible, shapes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.perf_analyzer,
    needs_perf_analyzer,
]


@pytest.fixture(scope="module")
def inputs(server: ServerProcess) -> list[dict[str, Any]]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return list(client.get_model_metadata(TINY, as_json=True)["inputs"])
    finally:
        client.close()


def run(server: ServerProcess, *args: str, batch: int = 1) -> list[Measurement]:
    # perf_analyzer's default data, random, is out of the tiny model's vocabulary
    base = ["-m", TINY, "-u", server.grpc_url, "-i", "grpc", "--input-data", "zero", *WINDOWS]
    return profile([*base, *args], timeout=180, batch_size=batch)


def grpc_shapes(inputs: list[dict[str, Any]], seq: int) -> list[str]:
    # as_json gives int64 dims as strings
    return shapes([{**s, "shape": [int(d) for d in s["shape"]]} for s in inputs], seq)


@pytest.mark.parametrize("mode", ["--sync", "--async", "--streaming"])
def test_modes(server: ServerProcess, inputs: list[dict[str, Any]], mode: str) -> None:
    (m,) = run(server, mode, "--concurrency-range", "2", *grpc_shapes(inputs, SEQ))
    assert m.concurrency == 2
    assert_plausible(m)


def test_batch_of_two_streaming(server: ServerProcess, inputs: list[dict[str, Any]]) -> None:
    args = ["--streaming", "-b", "2", "--concurrency-range", "2", *grpc_shapes(inputs, SEQ)]
    (m,) = run(server, *args, batch=2)
    assert m.batch_size == 2
    assert_plausible(m)


@pytest.mark.parametrize("mode", ["--sync", "--async", "--streaming"])
def test_concurrency_sweep(server: ServerProcess, inputs: list[dict[str, Any]], mode: str) -> None:
    points = run(server, mode, "--concurrency-range", "1:4:1", *grpc_shapes(inputs, SEQ))
    assert [m.concurrency for m in points] == [1, 2, 3, 4]
    for m in points:
        assert_plausible(m)
