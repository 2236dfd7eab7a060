"""The standard grpc.health.v1.Health service on the gRPC port (what Kubernetes gRPC probes,
Envoy and Istio ask), and what stopping admission (the chart's preStop) changes: readiness
over both protocols, while inference goes on."""

from __future__ import annotations

import time

import grpc
import pytest
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TINY
from tests.frontends.conftest import running, settings, url
from tests.frontends.protocols import feed, inputs, ready_status

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_follows_readiness_and_admission(tiny_repo):
    with running(settings(tiny_repo)) as server, grpc.insecure_channel(url(server, "grpc")) as ch:
        stub = health_pb2_grpc.HealthStub(ch)

        def check(service: str = "") -> int:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(stub.Check(request, timeout=10).status)

        assert check() == SERVING
        assert check("inference.GRPCInferenceService") == SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            check("no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == SERVING

        server.engine.stop_admission()
        assert check() == NOT_SERVING
        assert ready_status(url(server, "http")) == 400
        started = time.monotonic()
        assert next(watch).status == NOT_SERVING  # the stream reports the change
        assert time.monotonic() - started < 10
        watch.cancel()
        with httpclient.InferenceServerClient(url(server, "http")) as client:
            assert client.is_server_live()
            answer = client.infer(TINY, inputs(httpclient, feed()))  # out of rotation, answering
            assert answer.as_numpy("start_logits").shape == (1, 16)
