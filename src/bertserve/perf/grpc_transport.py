"""gRPC with grpc.aio and the compiled protos shipped in tritonclient.

Each input set is serialized to a ModelInferRequest once (raw_input_contents, as tritonclient
sends); the hot path passes those bytes through an identity serializer and reads only the
call's status, not the response tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2

from bertserve.perf.shared_memory import Placed, tensor_bytes
from bertserve.perf.transport import Connection, Outcome, Transport, TransportError, split_url
from bertserve.tensors import numpy_to_datatype

__all__ = ["GrpcTransport"]

_SERVICE = "/inference.GRPCInferenceService/"


def _as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _place(parameters: Any, where: Placed) -> None:
    parameters["shared_memory_region"].string_param = where.region
    parameters["shared_memory_offset"].int64_param = where.offset
    parameters["shared_memory_byte_size"].int64_param = where.byte_size


class _CallSlot(Connection):
    """A slot on the shared channel: HTTP/2 multiplexes the concurrent calls."""

    __slots__ = ("_call",)

    def __init__(self, call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]) -> None:
        self._call = call

    async def infer(self, payload: Any) -> Outcome:
        try:
            await self._call(payload)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise ConnectionError(exc.details()) from None
            return False, 0, 0
        return True, 0, 0

    def close(self) -> None:
        return None


class GrpcTransport(Transport):
    def __init__(self, url: str, model: str, version: str) -> None:
        super().__init__(url, model, version)
        host, port = split_url(url, default_port=8001)
        self._target = f"{host}:{port}"
        self._channel: grpc.aio.Channel | None = None

    def _channel_or_fail(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise TransportError("the gRPC transport is not started")
        return self._channel

    async def _unary(self, method: str, request: Any, response_type: Any) -> Any:
        call = self._channel_or_fail().unary_unary(
            _SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            return await call(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            raise TransportError(
                f"gRPC {method} on {self._target}: {exc.code().name}: {exc.details()}"
            ) from None

    async def start(self) -> None:
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self._channel = grpc.aio.insecure_channel(self._target, options=options)
        try:
            await self._unary(
                "ServerLive", service_pb2.ServerLiveRequest(), service_pb2.ServerLiveResponse
            )
        except TransportError as exc:
            raise TransportError(
                f"cannot reach a gRPC server at {self._target} ({exc}); is -u its gRPC port?"
            ) from None

    async def model_metadata(self) -> dict[str, Any]:
        request = service_pb2.ModelMetadataRequest(name=self.model, version=self.version)
        return _as_dict(
            await self._unary("ModelMetadata", request, service_pb2.ModelMetadataResponse)
        )

    async def max_batch_size(self) -> int:
        request = service_pb2.ModelConfigRequest(name=self.model, version=self.version)
        response = await self._unary("ModelConfig", request, service_pb2.ModelConfigResponse)
        return int(response.config.max_batch_size)

    async def statistics(self) -> dict[str, Any]:
        request = service_pb2.ModelStatisticsRequest(name=self.model, version=self.version)
        response = await self._unary(
            "ModelStatistics", request, service_pb2.ModelStatisticsResponse
        )
        return _as_dict(response)

    def _request(
        self, inputs: dict[str, np.ndarray], placed: Mapping[str, Placed] | None = None
    ) -> service_pb2.ModelInferRequest:
        request = service_pb2.ModelInferRequest(model_name=self.model, model_version=self.version)
        for name, array in inputs.items():
            datatype = numpy_to_datatype(array.dtype)
            entry = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
            if placed is not None:
                _place(entry.parameters, placed[name])
            else:
                request.raw_input_contents.append(tensor_bytes(array))
        for name, where in (placed or {}).items():
            if name not in inputs:
                _place(request.outputs.add(name=name).parameters, where)
        return request

    def prepare(
        self, inputs: dict[str, np.ndarray], placed: Mapping[str, Placed] | None = None
    ) -> bytes:
        return bytes(self._request(inputs, placed).SerializeToString())

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> None:
        request = service_pb2.SystemSharedMemoryRegisterRequest(
            name=name, key=key, offset=0, byte_size=byte_size
        )
        await self._unary(
            "SystemSharedMemoryRegister", request, service_pb2.SystemSharedMemoryRegisterResponse
        )

    async def unregister_system_shared_memory(self, name: str) -> None:
        request = service_pb2.SystemSharedMemoryUnregisterRequest(name=name)
        await self._unary(
            "SystemSharedMemoryUnregister",
            request,
            service_pb2.SystemSharedMemoryUnregisterResponse,
        )

    async def check(
        self, inputs: dict[str, np.ndarray], placed: Mapping[str, Placed] | None = None
    ) -> None:
        try:
            request = self._request(inputs, placed)
            await self._unary("ModelInfer", request, service_pb2.ModelInferResponse)
        except TransportError as exc:
            raise TransportError(f"the server refused a request to '{self.model}': {exc}") from None

    async def connect(self) -> Connection:
        # No (de)serializers: requests go out as the bytes prepare() made, replies stay bytes.
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel_or_fail().unary_unary(
            _SERVICE + "ModelInfer", request_serializer=None, response_deserializer=None
        )
        return _CallSlot(call)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
