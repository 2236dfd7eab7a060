"""The process end of a Kubernetes drain, against the real `bertserve serve`: SIGUSR1 (the
chart's preStop hook) takes the server out of rotation while it still answers, SIGTERM then
drains and exits 0."""

from __future__ import annotations

import os
import signal
import time

import pytest
import tritonclient.http as httpclient

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
