"""The process end of a Kubernetes drain, against the real `bertserve serve`: SIGUSR1 (the
chart's preStop hook) takes the server out of rotation while it still answers, SIGTERM then
drains and exits 0; and a start that cannot serve exits 1 with the reason."""

from __future__ import annotations

import os
import signal
import time

import pytest
import tritonclient.http as httpclient

from bertserve.launch import LaunchError
from tests.conftest import TINY, start_server
from tests.frontends.protocols import feed, inputs, ready_status

pytestmark = pytest.mark.e2e


def test_sigusr1_leaves_rotation_then_sigterm_drains(tiny_repo):
    server = start_server(tiny_repo)
    try:
        assert ready_status(server.http_url) == 200
        os.kill(server.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while ready_status(server.http_url) != 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready_status(server.http_url) == 400
        with httpclient.InferenceServerClient(server.http_url) as client:
            answer = client.infer(TINY, inputs(httpclient, feed()))
            assert answer.as_numpy("start_logits").shape == (1, 16)
    finally:
        assert server.stop() == 0
    assert "admission stopped" in server.output()


def test_a_start_that_cannot_serve_exits_1_with_the_reason(tmp_path):
    with pytest.raises(LaunchError, match="exited with code 1") as failed:
        start_server(tmp_path / "no-such-repository")
    assert "does not exist" in str(failed.value)
