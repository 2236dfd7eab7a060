"""`bertserve serve` as a process: its start-up lines, and SIGTERM draining the requests in
flight before it exits 0. (The protocols themselves are tested in-process, tests/frontends.)"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bertserve.announce import READY_LINE, SERVICES, started_line
from bertserve.server_log import LOG_LINE
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
    # The lines launchers read, between the log's (in tritonserver's layout: I/W/E MMDD ...).
    lines = [line for line in server.output().splitlines() if not LOG_LINE.match(line)]
    started = [started_line(s, "127.0.0.1", server.ports[s]) for s in SERVICES]
    assert lines[: len(started) + 1] == [*started, READY_LINE], lines
    assert lines[-2:] == ["bertserve stopping: finishing in-flight requests", "bertserve stopped"]


def test_a_repository_that_does_not_exist_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    done = subprocess.run(
        [sys.executable, "-m", "bertserve", "serve", "--model-repository", str(missing),
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"bertserve serve: cannot serve: model repository {missing} does not exist or is "
        "not a folder"
    )
    assert READY_LINE not in done.stdout
    assert done.stdout.strip().endswith("bertserve stopped")


def test_log_verbose_1_logs_requests_and_batches(tiny_repo: Path) -> None:
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    server = start_server(tiny_repo, extra=["--log-verbose", "1"])
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        tensors = []
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            tensor = httpclient.InferInput(name, [2, 16], "INT64")
            tensor.set_data_from_numpy(np.ones((2, 16), np.int64))
            tensors.append(tensor)
        client.infer(TINY, tensors, request_id="r-1")
        wrong = httpclient.InferInput("input_ids", [2, 16], "FP32")
        wrong.set_data_from_numpy(np.ones((2, 16), np.float32))
        with pytest.raises(InferenceServerException, match="FP32"):
            client.infer(TINY, [wrong, *tensors[1:]])
    finally:
        client.close()
        assert server.stop() == 0
    out = server.output()
    assert re.search(rf"request 'r-1' to {TINY} v1: 2 inference\(s\) in [\d.]+ ms", out), out
    assert re.search(rf"batch of {TINY}: 1 request\(s\), 2 inference\(s\); input", out), out
    assert re.search(rf"request '' to {TINY} v1 failed \(REJECTED\)", out), out


def test_without_log_verbose_requests_are_not_logged(tiny_repo: Path) -> None:
    server = start_server(tiny_repo)
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{TINY}", timeout=10):
        pass
    assert server.stop() == 0
    assert "request '" not in server.output() and "batch of" not in server.output()
