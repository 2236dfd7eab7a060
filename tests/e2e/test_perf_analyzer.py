"""Triton's real perf_analyzer against a running bertserve, over HTTP.

perf_analyzer asks for server metadata (and `statistics` among its extensions), the model's
metadata and config, the statistics endpoint around every window, and sends binary tensors;
its report's server-side columns come from our statistics. No speed is asserted here (speed
targets live in benchmarks/): only that each mode runs and that the numbers hang together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bertserve.perf.analyzer import PerfAnalyzerFailed, profile
from bertserve.perf.results import Measurement
from tests.conftest import TINY, ServerProcess, needs_perf_analyzer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.perf_analyzer,
    needs_perf_analyzer,
]

SEQ = 32
# Count windows keep each run short and independent of this machine's speed; stability is
# loose because only correctness is checked here.
WINDOWS = [
    "--measurement-mode", "count_windows", "--measurement-request-count", "40",
    "--stability-percentage", "100", "--max-trials", "10",
]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(server: ServerProcess) -> list[dict[str, Any]]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return list(client.get_model_metadata(TINY)["inputs"])
    finally:
        client.close()


def shapes(inputs: list[dict[str, Any]], seq: int) -> list[str]:
    """--shape for every input (the tiny model's sequence dimension is variable)."""
    args = []
    for spec in inputs:
        dims = [seq if d < 0 else d for d in spec["shape"][1:]]  # [0] is the batch dimension
        args += ["--shape", f"{spec['name']}:{','.join(map(str, dims))}"]
    return args


def run(server: ServerProcess, *args: str, batch: int = 1) -> list[Measurement]:
    base = ["-m", TINY, "-u", server.http_url, "-i", "http", *WINDOWS]
    return profile([*base, *args], timeout=180, batch_size=batch)


def assert_plausible(m: Measurement) -> None:
    assert m.throughput > 0
    assert m.request_count >= 0
    server_side = {
        "Server Queue": m.server_queue_us,
        "Server Compute Input": m.server_compute_input_us,
        "Server Compute Infer": m.server_compute_infer_us,
        "Server Compute Output": m.server_compute_output_us,
    }
    for column, value in server_side.items():
        assert value > 0, f"{column} is {value} us: the server's statistics miss this stage"
    # Time spent inside the server can't exceed what the client waited for a response.
    client_avg = m.breakdown_sum_us
    assert sum(server_side.values()) <= client_avg * 1.05, (server_side, client_avg)
    assert m.latency_p50_us <= m.latency_p99_us
    # Little's law: in-flight requests = throughput (requests/s) x average latency.
    assert m.concurrency is not None
    in_flight = m.requests_per_second * client_avg / 1e6
    assert 0.5 * m.concurrency <= in_flight <= 1.5 * m.concurrency, (in_flight, m)


def test_sync(server: ServerProcess, inputs: list[dict[str, Any]]) -> None:
    (m,) = run(server, "--sync", "--concurrency-range", "1", *shapes(inputs, SEQ))
    assert m.concurrency == 1
    assert_plausible(m)


def test_async(server: ServerProcess, inputs: list[dict[str, Any]]) -> None:
    (m,) = run(server, "--async", "--concurrency-range", "4", *shapes(inputs, SEQ))
    assert m.concurrency == 4
    assert_plausible(m)


def test_batch_of_two(server: ServerProcess, inputs: list[dict[str, Any]]) -> None:
    (m,) = run(server, "-b", "2", "--concurrency-range", "2", *shapes(inputs, SEQ), batch=2)
    assert m.batch_size == 2
    assert_plausible(m)


@pytest.mark.parametrize("seq", [8, 128])
def test_shapes(server: ServerProcess, inputs: list[dict[str, Any]], seq: int) -> None:
    (m,) = run(server, "--concurrency-range", "2", *shapes(inputs, seq))
    assert_plausible(m)


def test_input_data_zero(server: ServerProcess, inputs: list[dict[str, Any]]) -> None:
    (m,) = run(server, "--input-data", "zero", "--concurrency-range", "2", *shapes(inputs, SEQ))
    assert_plausible(m)


def test_input_data_random(server: ServerProcess, inputs: list[dict[str, Any]]) -> None:
    # Random 64-bit token ids fall outside the vocabulary: the server refuses them before they
    # reach the model (a 400 naming the input and the value; tritonserver's onnxruntime
    # backend fails the batch instead): perf_analyzer must report the server's error, and
    # the server must go on serving.
    with pytest.raises(PerfAnalyzerFailed) as failed:
        run(server, "--input-data", "random", "--concurrency-range", "2", *shapes(inputs, SEQ))
    assert "outside 0..1023 (vocab_size of model" in failed.value.output
    (m,) = run(server, "--input-data", "zero", "--concurrency-range", "1", *shapes(inputs, SEQ))
    assert_plausible(m)


def test_input_data_file(
    server: ServerProcess, inputs: list[dict[str, Any]], tmp_path: Path
) -> None:
    # Two real-looking requests: [CLS] ... [SEP] with a mask and segment ids.
    def tensors(length: int) -> dict[str, Any]:
        ids = [101] + [200 + i for i in range(length - 2)] + [102]  # tiny vocab: 1024
        values = {
            "input_ids": ids,
            "attention_mask": [1] * length,
            "token_type_ids": [0] * (length // 2) + [1] * (length - length // 2),
        }
        return {s["name"]: {"content": values[s["name"]], "shape": [length]} for s in inputs}

    data = tmp_path / "inputs.json"
    data.write_text(json.dumps({"data": [tensors(SEQ), tensors(SEQ)]}))
    (m,) = run(server, "--input-data", str(data), "--concurrency-range", "2")
    assert_plausible(m)


def test_concurrency_sweep(server: ServerProcess, inputs: list[dict[str, Any]]) -> None:
    points = run(server, "--concurrency-range", "1:4:1", *shapes(inputs, SEQ))
    assert [m.concurrency for m in points] == [1, 2, 3, 4]
    for m in points:
        assert_plausible(m)


@pytest.fixture(scope="module")
def workers_server(tiny_repo: Path) -> Any:
    """`bertserve serve --http-workers 2`: HTTP in two worker processes."""
    from tests.conftest import start_server

    srv = start_server(tiny_repo, extra=["--http-workers", "2"])
    yield srv
    srv.stop()


def test_through_http_worker_processes(
    workers_server: ServerProcess, inputs: list[dict[str, Any]]
) -> None:
    """perf_analyzer's whole conversation (metadata, config, statistics around each window,
    binary infers at concurrency 8, some connections on each worker) through the workers:
    the engine's statistics still give every server-side column."""
    (m,) = run(
        workers_server, "--async", "--concurrency-range", "8", "-b", "2",
        *shapes(inputs, SEQ), batch=2,
    )  # fmt: skip
    assert m.concurrency == 8 and m.batch_size == 2
    assert_plausible(m)
