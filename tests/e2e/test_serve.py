"""`bertserve serve` as a process: its start-up lines, and SIGTERM draining the requests in
flight before it exits 0. (The protocols themselves are tested in-process, tests/frontends.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bertserve.announce import READY_LINE, SERVICES, started_line
from tests.conftest import TINY, copy_model, start_server
from tests.frontends.conftest import SLOW
from tests.frontends.protocols import InFlight

pytestmark = pytest.mark.e2e


def test_sigterm_finishes_requests_in_flight(tiny_repo: Path, tmp_path: Path) -> None:
    copy_model(tiny_repo, TINY, tmp_path / "repo", "slow", SLOW)
    server = start_server(tmp_path / "repo")
    requests = InFlight({"http": server.http_url, "grpc": server.grpc_url}, "slow")
    time.sleep(0.5)  # requests are waiting in the 1.5 s batching window
    assert server.stop() == 0
    assert requests.results() == [(1, 16)] * 6
    lines = server.output().splitlines()
    started = [started_line(s, "127.0.0.1", server.ports[s]) for s in SERVICES]
    assert lines[: len(started) + 1] == [*started, READY_LINE], lines
    assert lines[-2:] == ["bertserve stopping: finishing in-flight requests", "bertserve stopped"]
