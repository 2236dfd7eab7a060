"""The gRPC front end alone (grpc.aio on port 0) over a stand-in engine: what a real model
can't easily provoke (responses above the size limit, a client leaving a stream with requests
in flight)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from bertserve.endpoints.grpc import start_grpc_server
from bertserve.errors import ModelNotFound
from bertserve.messages import InferOutput, InferRequest, InferResponse
from bertserve.protocol.grpc_codec import encode_request
from bertserve.settings import ServerSettings

LIMIT = 4096
Stub = service_pb2_grpc.GRPCInferenceServiceStub


class StandInEngine:
    """Answers 'big' with an output above LIMIT, holds 'hold' until released, and knows no
    other model."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancelled = 0

    async def infer(self, request: InferRequest) -> InferResponse:
        if request.model_name == "hold":
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        elif request.model_name != "big":
            raise ModelNotFound(f"unknown model '{request.model_name}'")
        data = np.zeros(LIMIT if request.model_name == "big" else 4, np.float32)
        return InferResponse(
            request.model_name, "1", [InferOutput("y", "FP32", data.shape, data)], id=request.id
        )


@pytest.fixture()
async def standin() -> AsyncIterator[tuple[StandInEngine, Stub]]:
    engine = StandInEngine()
    settings = ServerSettings(grpc_port=0, grpc_max_message_size=LIMIT)
    server, port = await start_grpc_server(engine, settings)  # type: ignore[arg-type]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield engine, service_pb2_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def _request(model: str, request_id: str = "") -> service_pb2.ModelInferRequest:
    buf = encode_request(model, {"x": np.zeros((1, 4), np.int64)}, request_id=request_id)
    return service_pb2.ModelInferRequest.FromString(buf)


async def test_response_above_the_limit_is_a_clear_error(standin: Any) -> None:
    _, stub = standin
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(_request("big"))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "response message of" in info.value.details()
    assert "--grpc-max-message-size" in info.value.details()


async def test_stream_reports_a_too_large_response_and_goes_on(standin: Any) -> None:
    _, stub = standin

    async def requests() -> AsyncIterator[service_pb2.ModelInferRequest]:
        yield _request("big", "b")
        yield _request("nope", "n")

    replies = [r async for r in stub.ModelStreamInfer(requests())]
    errors = {r.infer_response.id: r.error_message for r in replies}
    assert "--grpc-max-message-size" in errors["b"]
    assert "unknown model 'nope'" in errors["n"]


async def test_leaving_a_stream_cancels_its_requests_in_flight(standin: Any) -> None:
    engine, stub = standin
    call = stub.ModelStreamInfer()
    for i in range(3):
        await call.write(_request("hold", str(i)))
    await asyncio.sleep(0.3)
    call.cancel()
    for _ in range(50):
        if engine.cancelled == 3:
            break
        await asyncio.sleep(0.05)
    assert engine.cancelled == 3


async def test_stream_replies_after_the_client_half_closes(standin: Any) -> None:
    engine, stub = standin
    call = stub.ModelStreamInfer()
    await call.write(_request("hold", "late"))
    await call.done_writing()
    await asyncio.sleep(0.1)
    engine.release.set()
    reply = await call.read()
    assert reply.infer_response.id == "late" and not reply.error_message
    assert await call.read() == grpc.aio.EOF


async def test_stream_tells_a_client_that_asks_which_reply_is_final(standin: Any) -> None:
    engine, stub = standin
    engine.release.set()
    asks = _request("hold", "a")
    asks.parameters["triton_enable_empty_final_response"].bool_param = True

    async def requests() -> AsyncIterator[service_pb2.ModelInferRequest]:
        yield asks
        yield _request("hold", "b")

    replies = {r.infer_response.id: r async for r in stub.ModelStreamInfer(requests())}
    assert replies["a"].infer_response.parameters["triton_final_response"].bool_param
    assert "triton_final_response" not in replies["b"].infer_response.parameters
    unary = await stub.ModelInfer(asks)
    assert "triton_final_response" not in unary.parameters


@pytest.mark.parametrize(
    "name",
    [
        "bertserve.server",
        "bertserve.endpoints.http",
        "bertserve.endpoints.grpc",
        "bertserve.protocol.grpc_codec",
        "bertserve.protocol.load_parameters",
    ],
)
def test_all_is_explicit_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__
    for member in module.__all__:
        assert hasattr(module, member), f"{name}.{member}"
