"""gRPC front end: Triton's `inference.GRPCInferenceService` over grpc.aio, on the engine the
HTTP front end uses.

Each method translates (protocol/grpc_codec.py) and calls the engine; errors become status
codes through endpoints/status.py. ModelInfer and ModelStreamInfer take and return raw bytes
(no protobuf (de)serializer on the channel) so the codec can keep tensors as views over the
received buffer, and so message sizes are checked here with a message naming the flag."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb

from bertserve.endpoints.status import grpc_code_name, retry_later
from bertserve.engine import Engine
from bertserve.errors import BertserveError
from bertserve.messages import InferRequest
from bertserve.protocol.grpc_codec import (
    decode_request,
    encode_response,
    from_json,
    parameters_to_dict,
    request_identity,
    stream_error,
    stream_response,
)
from bertserve.protocol.load_parameters import load_config
from bertserve.settings import Restriction, ServerSettings, TlsFiles

__all__ = ["API_GROUP", "EngineHealth", "GrpcService", "start_grpc_server", "SERVICE_NAME"]

log = logging.getLogger("bertserve.grpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

_ASKS_FINAL_FLAG = "triton_enable_empty_final_response"
_FINAL_FLAG = "triton_final_response"

#: A unary method: the request and the reply are protobuf messages, or bytes (ModelInfer).
Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]


class MessageTooLarge(Exception):
    """A request or response above --grpc-max-message-size (RESOURCE_EXHAUSTED)."""


class GrpcService:
    """The service's methods, each one translation and one engine call."""

    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.limit = settings.grpc_max_message_size
        self.stream_outstanding = settings.grpc_stream_max_outstanding
        self.rules = Restriction.by_api(settings.grpc_restricted_protocols)

    # -- health and metadata ------------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.engine.live)

    async def server_ready(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.engine.ready)

    async def model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.engine.model_ready(request.name, request.version))

    async def server_metadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        return from_json(self.engine.server_metadata(), pb.ServerMetadataResponse)

    async def model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        doc = self.engine.model_metadata(request.name, request.version)
        return from_json(doc, pb.ModelMetadataResponse)

    async def model_config(self, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        config = self.engine.model_config_proto(request.name, request.version)
        return pb.ModelConfigResponse(config=config)

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest
    ) -> pb.ModelStatisticsResponse:
        stats = self.engine.statistics(request.name, request.version)
        return from_json({"model_stats": stats}, pb.ModelStatisticsResponse)

    # -- repository ---------------------------------------------------------------------------

    async def repository_index(
        self, request: pb.RepositoryIndexRequest
    ) -> pb.RepositoryIndexResponse:
        rows = self.engine.repository_index(request.ready)
        return from_json({"models": rows}, pb.RepositoryIndexResponse)

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest
    ) -> pb.RepositoryModelLoadResponse:
        self.engine.check_control()
        config = load_config(parameters_to_dict(request.parameters))
        await self.engine.load(request.model_name, config)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest
    ) -> pb.RepositoryModelUnloadResponse:
        self.engine.check_control()
        await self.engine.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- shared memory ------------------------------------------------------------------------

    async def system_shm_status(
        self, request: pb.SystemSharedMemoryStatusRequest
    ) -> pb.SystemSharedMemoryStatusResponse:
        regions = self.engine.shared_memory.status("system", request.name)
        return from_json(
            {"regions": {r["name"]: r for r in regions}}, pb.SystemSharedMemoryStatusResponse
        )

    async def system_shm_register(
        self, request: pb.SystemSharedMemoryRegisterRequest
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.engine.shared_memory.register_system(
            request.name, request.key, request.offset, request.byte_size
        )
        return pb.SystemSharedMemoryRegisterResponse()

    async def system_shm_unregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.engine.shared_memory.unregister("system", request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def cuda_shm_status(
        self, request: pb.CudaSharedMemoryStatusRequest
    ) -> pb.CudaSharedMemoryStatusResponse:
        regions = self.engine.shared_memory.status("cuda", request.name)
        return from_json(
            {"regions": {r["name"]: r for r in regions}}, pb.CudaSharedMemoryStatusResponse
        )

    async def cuda_shm_register(
        self, request: pb.CudaSharedMemoryRegisterRequest
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self.engine.shared_memory.register_cuda(
            request.name, request.raw_handle, request.device_id, request.byte_size
        )
        return pb.CudaSharedMemoryRegisterResponse()

    async def cuda_shm_unregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self.engine.shared_memory.unregister("cuda", request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- inference ----------------------------------------------------------------------------

    async def model_infer(self, raw: bytes) -> bytes:
        return await self._infer(self._decode(raw))

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        """Every request runs as soon as it arrives; replies go out as they complete (out of
        order), each naming its request id. A failed request is an `error_message` reply; the
        stream stays open. At most `--grpc-stream-max-outstanding` requests are read and not
        yet answered: past that the stream is not read until the client takes a reply, so a
        client that never reads cannot make the server buffer without limit."""
        replies: asyncio.Queue[bytes | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()
        room = asyncio.Semaphore(self.stream_outstanding)

        async def one(raw: bytes) -> None:
            replies.put_nowait(await self._stream_reply(raw))

        async def read() -> None:
            try:
                stream = aiter(requests)
                while True:
                    await room.acquire()  # released once a reply has been written
                    raw = await anext(stream, None)
                    if raw is None:
                        break
                    task = asyncio.create_task(one(raw))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.wait(set(running))
            finally:
                replies.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (reply := await replies.get()) is not None:
                yield reply  # returns once grpc has taken it: the client's window had room
                room.release()
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def _stream_reply(self, raw: bytes) -> bytes:
        try:
            return stream_response(await self._infer(self._decode(raw), streaming=True))
        except (BertserveError, MessageTooLarge) as exc:
            message = str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the stream
            log.exception("unhandled error in ModelStreamInfer")
            message = self._relative(f"internal error: {exc}")
        return stream_error(message, *request_identity(raw))

    def _decode(self, raw: bytes) -> InferRequest:
        self._check_size(len(raw), "request")
        return decode_request(raw)

    async def _infer(self, request: InferRequest, streaming: bool = False) -> bytes:
        response = await self.engine.infer(request)
        if streaming and request.parameters.get(_ASKS_FINAL_FLAG):
            # As tritonserver: a stream client that asks is told which response is a
            # request's last (here every response: the models served are not decoupled).
            response.parameters[_FINAL_FLAG] = True
        payload = encode_response(response)
        self._check_size(len(payload), "response")
        return payload

    def _check_size(self, size: int, what: str) -> None:
        if size > self.limit:
            hint = (
                "send smaller batches"
                if what == "request"
                else "ask for fewer outputs or a smaller batch"
            )
            raise MessageTooLarge(
                f"the {what} message of {size} bytes exceeds the limit of {self.limit} bytes "
                f"(--grpc-max-message-size): {hint}, or raise the limit"
            )

    # -- wiring -------------------------------------------------------------------------------

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """The implemented methods by name; the others answer UNIMPLEMENTED."""
        # method name -> (behavior, request type); None = raw bytes both ways (ModelInfer).
        unary: dict[str, tuple[Callable[[Any], Awaitable[Any]], Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest),
            "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest),
            "RepositoryModelLoad": (self.repository_model_load, pb.RepositoryModelLoadRequest),
            "RepositoryModelUnload": (
                self.repository_model_unload,
                pb.RepositoryModelUnloadRequest,
            ),
            "ModelInfer": (self.model_infer, None),
            "SystemSharedMemoryStatus": (
                self.system_shm_status,
                pb.SystemSharedMemoryStatusRequest,
            ),
            "SystemSharedMemoryRegister": (
                self.system_shm_register,
                pb.SystemSharedMemoryRegisterRequest,
            ),
            "SystemSharedMemoryUnregister": (
                self.system_shm_unregister,
                pb.SystemSharedMemoryUnregisterRequest,
            ),
            "CudaSharedMemoryStatus": (self.cuda_shm_status, pb.CudaSharedMemoryStatusRequest),
            "CudaSharedMemoryRegister": (
                self.cuda_shm_register,
                pb.CudaSharedMemoryRegisterRequest,
            ),
            "CudaSharedMemoryUnregister": (
                self.cuda_shm_unregister,
                pb.CudaSharedMemoryUnregisterRequest,
            ),
        }
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(
                self._guard(name, _translating_errors(method, self._relative)),
                request_deserializer=None if kind is None else kind.FromString,
                response_serializer=None if kind is None else _serialize,
            )
            for name, (method, kind) in unary.items()
        }
        methods["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self._guard("ModelStreamInfer", self.model_stream_infer, stream=True)
        )
        return methods

    def _relative(self, message: str) -> str:
        return self.engine.relative(message)

    def _guard(self, name: str, behavior: Any, stream: bool = False) -> Any:
        """The method as is, or, where its group is restricted (--grpc-restricted-protocol),
        refusing calls without the header (Triton's words and code)."""
        rule = self.rules.get(API_GROUP[name])
        if rule is None:
            return behavior
        if stream:

            async def checked_stream(requests: Any, context: Context) -> Any:
                await refuse_unless_permitted(rule, context)
                async for reply in behavior(requests, context):
                    yield reply

            return checked_stream

        async def checked(request: Any, context: Context) -> Any:
            await refuse_unless_permitted(rule, context)
            return await behavior(request, context)

        return checked


async def refuse_unless_permitted(rule: Restriction | None, context: Context) -> None:
    """Abort the call (UNAVAILABLE, Triton's words) unless it carries the header `rule`
    asks for, as `triton-grpc-protocol-<key>` metadata."""
    if rule is None:
        return
    header = f"triton-grpc-protocol-{rule.key}"
    given = dict(context.invocation_metadata() or ()).get(header)
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), rule.value.encode()):
        await context.abort(
            grpc.StatusCode.UNAVAILABLE, f"This protocol is restricted, expecting header '{header}'"
        )


#: Each method's group, as Triton names them (--grpc-restricted-protocol).
API_GROUP = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    **{
        f"{kind}SharedMemory{verb}": "shared-memory"
        for kind in ("System", "Cuda")
        for verb in ("Status", "Register", "Unregister")
    },
}


class EngineHealth(health_pb2_grpc.HealthServicer):
    """The standard grpc.health.v1.Health service (what Kubernetes gRPC probes, Envoy and
    Istio ask). The server as a whole ("") and the inference service are SERVING while the
    engine is ready; NOT_SERVING while models load, after a preStop stopped admission, and
    during a drain. Any other name is unknown (NOT_FOUND, as the protocol asks). Watch sends
    the status, then each change, checked every `watch_interval` seconds."""

    SERVICES = ("", SERVICE_NAME)

    def __init__(
        self, engine: Engine, watch_interval: float = 1.0, rule: Restriction | None = None
    ) -> None:
        self.engine = engine
        self.watch_interval = watch_interval
        self.rule = rule  # Triton's health group covers this service too

    def status(self, service: str) -> int:
        if service not in self.SERVICES:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if self.engine.ready:
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(  # noqa: N802 - the generated servicer's method name
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        await refuse_unless_permitted(self.rule, context)
        status = self.status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802 - the generated servicer's method name
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> None:
        await refuse_unless_permitted(self.rule, context)
        last = None
        while True:
            status = self.status(request.service)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            await asyncio.sleep(self.watch_interval)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _translating_errors(
    method: Callable[[Any], Awaitable[Any]], relative: Callable[[str], str]
) -> Behavior:
    async def behavior(request: Any, context: Context) -> Any:
        try:
            return await method(request)
        except BertserveError as exc:
            code = getattr(grpc.StatusCode, grpc_code_name(exc))
            # gRPC's retry pushback says when to come back
            await context.abort(code, str(exc), _RETRY_LATER if retry_later(exc) else ())
        except MessageTooLarge as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            log.exception("unhandled error in %s", getattr(method, "__name__", method))
            await context.abort(grpc.StatusCode.INTERNAL, relative(f"internal error: {exc}"))

    return behavior


_RETRY_LATER = (("grpc-retry-pushback-ms", "1000"),)

#: A connection's HTTP/2 (and TLS) handshake must finish within this; an idle connection is
#: told to go away (GOAWAY; clients reconnect when they need to) after that.
HANDSHAKE_TIMEOUT_MS = 10_000
MAX_CONNECTION_IDLE_MS = 60_000


def _options(settings: ServerSettings) -> list[tuple[str, int]]:
    # grpc's own size check is a backstop at twice the limit: below it, ours answers with a
    # message that names the flag.
    backstop = min(2 * settings.grpc_max_message_size, 2**31 - 1)
    options = [
        ("grpc.max_receive_message_length", backstop),
        ("grpc.max_send_message_length", backstop),
        ("grpc.so_reuseport", int(settings.reuse_grpc_port)),
        ("grpc.keepalive_time_ms", settings.grpc_keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.grpc_keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(settings.grpc_keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", settings.grpc_http2_max_pings_without_data),
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            settings.grpc_http2_min_recv_ping_interval_without_data_ms,
        ),
        ("grpc.http2.max_ping_strikes", settings.grpc_http2_max_ping_strikes),
        ("grpc.max_allowed_incoming_connections", settings.grpc_max_connections),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
    ]
    if settings.grpc_max_connection_age_ms:
        options.append(("grpc.max_connection_age_ms", settings.grpc_max_connection_age_ms))
    if settings.grpc_max_connection_age_grace_ms:
        options.append(
            ("grpc.max_connection_age_grace_ms", settings.grpc_max_connection_age_grace_ms)
        )
    return options


_COMPRESSION = {
    "none": None,
    "low": grpc.Compression.Deflate,
    "medium": grpc.Compression.Gzip,
    "high": grpc.Compression.Gzip,
}


async def start_grpc_server(
    engine: Engine, settings: ServerSettings
) -> tuple[grpc.aio.Server, int]:
    """Bind (port 0 = a free one) and start serving; returns the server and its port."""
    server = grpc.aio.server(
        options=_options(settings),
        compression=_COMPRESSION[settings.grpc_infer_response_compression_level],
    )
    methods = GrpcService(engine, settings).method_handlers()
    # As tritonclient's generated code: a generic handler, plus registered methods (grpcio
    # 1.63+), which the core routes without a lookup by name on every call.
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE_NAME, methods)])
    if hasattr(server, "add_registered_method_handlers"):
        server.add_registered_method_handlers(SERVICE_NAME, methods)
    health_rule = Restriction.by_api(settings.grpc_restricted_protocols).get("health")
    health_pb2_grpc.add_HealthServicer_to_server(EngineHealth(engine, rule=health_rule), server)
    bound = settings.grpc_address or settings.host
    host = f"[{bound}]" if ":" in bound else bound
    address = f"{host}:{settings.grpc_port}"
    try:
        if settings.grpc_tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, _credentials(settings.grpc_tls))
    except RuntimeError as exc:
        raise SystemExit(
            f"cannot bind gRPC to {address}: {exc}; choose another --grpc-port (0 = a free port)"
        ) from None
    await server.start()
    log.info("gRPC service listening on %s:%d", bound, port)
    return server, port


def _credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    key = read_pem(tls.key, "--grpc-server-key")
    cert = read_pem(tls.cert, "--grpc-server-cert")
    assert key is not None and cert is not None  # both paths are given
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=read_pem(tls.root, "--grpc-root-cert"),
        require_client_auth=tls.mutual,
    )


def read_pem(path: Path | None, flag: str) -> bytes | None:
    """A PEM file a TLS flag names; one that cannot be read ends the start, naming the flag."""
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"cannot read {flag} {path}: {exc.strerror or exc}") from None
