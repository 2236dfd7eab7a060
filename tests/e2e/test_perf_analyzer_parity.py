"""Triton's real perf_analyzer against bertserve as a Triton user runs it: system shared memory
(`--shared-memory system`, which registers regions and sends requests naming them) over HTTP
and gRPC, and the input data file `bertserve build` writes beside each model (real token ids,
shapes included, so no `--shape` is needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bertserve.builder.model_config import PERF_INPUT_FILE
from bertserve.launch import ServerProcess
from bertserve.perf.analyzer import profile
from tests.conftest import TINY, needs_perf_analyzer, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.perf_analyzer, needs_perf_analyzer]

WINDOWS = [
    "--measurement-mode", "count_windows", "--measurement-request-count", "30",
    "--stability-percentage", "100", "--max-trials", "6",
]  # fmt: skip


@pytest.fixture(scope="module")
def shm_server(tiny_repo: Path) -> Iterator[ServerProcess]:
    with start_server(tiny_repo, extra=["--allow-client-shm=true"]) as server:
        yield server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_system_shared_memory(shm_server: ServerProcess, tiny_repo: Path, protocol: str) -> None:
    address = shm_server.http_url if protocol == "http" else shm_server.grpc_url
    data = str(tiny_repo / TINY / PERF_INPUT_FILE)
    (point,) = profile(
        ["-m", TINY, "-u", address, "-i", protocol, "--shared-memory", "system",
         "--output-shared-memory-size", "4096", "--input-data", data, *WINDOWS],
        timeout=180,
    )  # fmt: skip
    assert point.throughput > 0 and point.latency_p50_us > 0


def test_built_input_data_needs_no_shapes(shm_server: ServerProcess, tiny_repo: Path) -> None:
    data = str(tiny_repo / TINY / PERF_INPUT_FILE)
    (point,) = profile(
        ["-m", TINY, "-u", shm_server.http_url, "-i", "http", "--input-data", data, *WINDOWS],
        timeout=180,
    )
    assert point.throughput > 0
