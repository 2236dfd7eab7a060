"""The process end of a Kubernetes drain, against the real `bertserve serve`: SIGUSR1 (the
chart's preStop hook) takes the server out of rotation while it still answers, SIGTERM then
drains and exits 0; and a start that cannot serve exits 1 with the reason."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient

from bertserve.launch import LaunchError
from tests.conftest import TINY, start_server

pytestmark = pytest.mark.e2e


def ready_code(address: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/health/ready", timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_sigusr1_leaves_rotation_then_sigterm_drains(tiny_repo):
    server = start_server(tiny_repo)
    try:
        assert ready_code(server.http_url) == 200
        os.kill(server.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while ready_code(server.http_url) != 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready_code(server.http_url) == 400
        with httpclient.InferenceServerClient(server.http_url) as client:
            tensors = []
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                tensor = httpclient.InferInput(name, [1, 8], "INT64")
                tensor.set_data_from_numpy(np.ones((1, 8), np.int64))
                tensors.append(tensor)
            assert client.infer(TINY, tensors).as_numpy("start_logits").shape == (1, 8)
    finally:
        assert server.stop() == 0
    assert "admission stopped" in server.output()


def test_a_start_that_cannot_serve_exits_1_with_the_reason(tmp_path):
    with pytest.raises(LaunchError, match="exited with code 1") as failed:
        start_server(tmp_path / "no-such-repository")
    assert "does not exist" in str(failed.value)
