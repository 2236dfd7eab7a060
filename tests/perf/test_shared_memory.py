"""`bertserve perf --shared-memory system` against the real server, over both protocols: the
sweep's requests name regions instead of carrying tensors, the server runs them, and every
region is unregistered and unlinked afterwards, after a refused request too."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bertserve.perf.profiler import profile
from bertserve.perf.session import run_async
from bertserve.perf.shared_memory import SystemSharedMemory, tensor_bytes
from bertserve.perf.transport import TransportError
from tests.conftest import TINY, ServerProcess, start_server
from tests.perf.conftest import tiny_settings

pytestmark = pytest.mark.e2e

SHM = Path("/dev/shm")


@pytest.fixture(scope="module")
def shm_server(tiny_repo: Path) -> Iterator[ServerProcess]:
    server = start_server(tiny_repo, extra=["--allow-client-shm=true"])
    yield server
    server.stop()


def _ours() -> set[str]:
    return {p.name for p in SHM.glob("bertserve_perf_*")}


def _get(server: ServerProcess, path: str) -> object:
    with urllib.request.urlopen(f"http://{server.http_url}{path}") as reply:
        return json.load(reply)


def _successes(server: ServerProcess, model: str) -> int:
    stats = _get(server, f"/v2/models/{model}/stats")
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])  # type: ignore[index]


def test_regions_hold_every_set_back_to_back() -> None:
    from tritonclient.utils import shared_memory as shm

    sets = [
        {
            "a": np.arange(6, dtype=np.int64).reshape(2, 3),
            "s": np.array([b"xy", b""], dtype=object),
        },
        {"a": np.full((2, 3), 7, dtype=np.int64), "s": np.array([b"z", b"w"], dtype=object)},
    ]
    memory = SystemSharedMemory(output_byte_size=64)
    try:
        placed = memory.place(sets, ["out"])
        (inputs, output) = memory.regions
        assert inputs.byte_size == sum(len(tensor_bytes(a)) for s in sets for a in s.values())
        assert output.byte_size == 64
        assert placed[1]["a"].offset == len(tensor_bytes(sets[0]["a"])) + len(
            tensor_bytes(sets[0]["s"])
        )
        assert placed[0]["out"] == placed[1]["out"]  # outputs share one region
        handle = shm.create_shared_memory_region("reader", inputs.key, inputs.byte_size)
        try:
            second = shm.get_contents_as_numpy(handle, np.int64, (2, 3), placed[1]["a"].offset)
            assert (second == 7).all()
        finally:
            shm.destroy_shared_memory_region(handle)
    finally:
        memory.close()
    assert not memory.regions


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_sweep_over_shared_memory(shm_server: ServerProcess, protocol: str) -> None:
    server = shm_server
    before, count = _ours(), _successes(server, TINY)
    url = server.http_url if protocol == "http" else server.grpc_url
    run = run_async(
        profile(tiny_settings(server, protocol=protocol, url=url, shared_memory="system"))
    )
    (point,) = run.measurements
    assert point.throughput > 0
    assert "--shared-memory system" in run.notes
    # The requests were run by the server (not refused), and nothing is left behind.
    assert _successes(server, TINY) > count
    assert _get(server, "/v2/systemsharedmemory/status") == []
    assert _ours() == before


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_output_region_too_small_is_named_and_cleaned_up(
    shm_server: ServerProcess, protocol: str
) -> None:
    server, before = shm_server, _ours()
    url = server.http_url if protocol == "http" else server.grpc_url
    settings = tiny_settings(
        server, protocol=protocol, url=url, shared_memory="system", output_shared_memory_size=4
    )
    with pytest.raises(TransportError, match="refused a request"):
        run_async(profile(settings))
    assert _get(server, "/v2/systemsharedmemory/status") == []
    assert _ours() == before


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_without_client_shared_memory_says_which_flag(
    server: ServerProcess, protocol: str
) -> None:
    before = _ours()
    url = server.http_url if protocol == "http" else server.grpc_url
    settings = tiny_settings(server, protocol=protocol, url=url, shared_memory="system")
    with pytest.raises(TransportError, match="--allow-client-shm=true"):
        run_async(profile(settings))
    assert _ours() == before
