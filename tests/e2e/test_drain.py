"""What Kubernetes relies on, against the real server: the standard grpc.health.v1 service,
SIGUSR1 (the preStop hook) taking the server out of rotation while it still answers, SIGTERM
draining, and a start that cannot serve exiting non-zero."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TINY, start_server

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health(url: str, service: str = "") -> int:
    with grpc.insecure_channel(url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def infer(client: httpclient.InferenceServerClient) -> np.ndarray:
    tensors = []
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        tensor = httpclient.InferInput(name, [1, 8], "INT64")
        tensor.set_data_from_numpy(np.ones((1, 8), np.int64))
        tensors.append(tensor)
    return client.infer(TINY, tensors).as_numpy("start_logits")


def test_health_service_admission_stop_and_drain(tiny_repo):
    server = start_server(tiny_repo)
    ready_url = f"http://{server.http_url}/v2/health/ready"
    try:
        assert health(server.grpc_url) == SERVING
        assert health(server.grpc_url, "inference.GRPCInferenceService") == SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health(server.grpc_url, "no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert http_status(ready_url) == 200

        server.proc.send_signal(signal.SIGUSR1)  # what the chart's preStop hook sends
        with httpclient.InferenceServerClient(server.http_url) as client:
            for _ in range(100):
                if http_status(ready_url) == 400:
                    break
                time.sleep(0.05)
            assert http_status(ready_url) == 400
            assert health(server.grpc_url) == NOT_SERVING
            assert http_status(f"http://{server.http_url}/v2/health/live") == 200
            assert infer(client).shape[0] == 1  # out of rotation, still answering
    finally:
        assert server.stop() == 0
    assert "admission stopped" in server.output()


def test_a_start_that_cannot_serve_exits_non_zero(tmp_path):
    server = start_server(tmp_path / "no-such-repository", wait_ready=False)
    code = server.proc.wait(60)
    server.stop()
    assert code == 1
    assert "does not exist" in server.output()
