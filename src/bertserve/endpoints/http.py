"""HTTP/REST front end: Triton's paths and JSON shapes over a bare ASGI app.

No framework and no per-request validation layer: the hot path is a path split, one table
lookup, one body read, the codec and the engine call. An endpoint is one row in ROUTES and one
handler method on HttpApp."""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hmac
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bertserve.endpoints.http_connection import CLIENT_GONE, WAITING_TASK
from bertserve.endpoints.status import http_status, retry_later
from bertserve.engine import Engine
from bertserve.errors import BertserveError, InvalidInput, RequestTooLarge
from bertserve.messages import InferRequest, InferResponse
from bertserve.protocol.http_codec import HEADER_LENGTH, decode_request, encode_response
from bertserve.protocol.load_parameters import load_config
from bertserve.settings import Restriction, ServerSettings

__all__ = [
    "API_GROUP",
    "CHANGES_STATE",
    "HttpApp",
    "READS_BODY",
    "ROUTES",
    "Reply",
    "error_reply",
    "infer_headers",
    "infer_reply",
]

log = logging.getLogger("bertserve.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


class Reply:
    """What a handler answers: status, body and headers (content-length is added on sending)."""

    __slots__ = ("status", "body", "headers")

    def __init__(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else _JSON


def _json(doc: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(doc))


_RETRY_LATER = [*_JSON, (b"retry-after", b"1")]


def error_reply(error: BaseException) -> Reply:
    """The reply to a domain error: its status (endpoints/status.py) and message."""
    headers = _RETRY_LATER if retry_later(error) else _JSON
    return Reply(http_status(error), orjson.dumps({"error": str(error)}), headers)


class HttpApp:
    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self._take_settings(settings)

    def _take_settings(self, settings: ServerSettings) -> None:
        self.settings = settings
        rules = Restriction.by_api(settings.http_restricted_apis)
        #: handler -> the header it needs (--http-restricted-api)
        self._rules = {h: rules[api] for h, api in API_GROUP.items() if api in rules}
        #: the handlers whose requests are looked at before they run (a set: one lookup)
        self._guarded = frozenset(self._rules) | CHANGES_STATE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            reply = await self._route(scope, receive)
        except BertserveError as exc:
            reply = error_reply(exc)
        except asyncio.CancelledError:
            if scope.get(CLIENT_GONE):
                return  # its client went away (http_connection): nobody to answer
            raise
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            reply = self.internal_error(exc)
        headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _route(self, scope: Scope, receive: Receive) -> Reply:
        path = scope["path"]
        parts = path.strip("/").split("/")
        n = len(parts)
        routes = _TABLE.get((n, parts[-1])) or _TABLE.get((n, None)) or ()
        parts.append("")  # what an absent placeholder reads (its index is -1)
        allowed = ""
        for route in routes:
            for i, segment in route.literals:
                if parts[i] != segment:
                    break
            else:
                if route.method is None or route.method == scope["method"]:
                    if route.handler in self._guarded:
                        refusal = self._refusal(scope, route.handler)
                        if refusal is not None:
                            return refusal
                    return await self._dispatch(
                        route.handler, scope, receive, parts[route.model_at],
                        parts[route.version_at],
                    )  # fmt: skip
                allowed = route.method
        if allowed:
            return Reply(
                405,
                orjson.dumps({"error": f"{scope['method']} {path}: this path takes {allowed}"}),
                [*_JSON, (b"allow", allowed.encode())],
            )
        return _json({"error": f"unknown path '{path}'"}, 404)

    async def _dispatch(
        self, handler: Handler, scope: Scope, receive: Receive, model: str, version: str
    ) -> Reply:
        """Run the handler a request's route names (an HTTP worker process hands most of them
        to the engine's process instead: http_worker.WorkerApp)."""
        return await handler(self, scope, receive, model, version)

    def internal_error(self, error: BaseException) -> Reply:
        """The 500 reply to an error no handler expected."""
        return _json({"error": self.engine.relative(f"internal error: {error}")}, 500)

    def _refusal(self, scope: Scope, handler: Handler) -> Reply | None:
        """403 for a request without the header its endpoint group needs (Triton's words), or
        for one that changes the server's state the way a web page can (see _from_a_browser)."""
        headers = scope["headers"]
        rule = self._rules.get(handler)
        if rule is not None:
            key = rule.key.encode()
            given = next((v for k, v in headers if k == key), None)
            if given is None or not hmac.compare_digest(given, rule.value.encode()):
                return _json(
                    {"error": f"This API is restricted, expecting header '{rule.key}'"}, 403
                )
        if handler in CHANGES_STATE:
            reason = _from_a_browser(headers)
            if reason:
                return _json({"error": f"{reason}: a web page may send such a request to any "
                              "server, so it cannot change this one's state; send "
                              "Content-Type: application/json (curl: -H 'Content-Type: "
                              "application/json') or no body, and no Origin"}, 403)  # fmt: skip
        return None

    # -- handlers: (scope, receive, model, version) -> reply; one row each in ROUTES ----------

    async def server_metadata(self, scope: Scope, receive: Receive, *_: str) -> Reply:
        return _json(self.engine.server_metadata())

    async def live(self, scope: Scope, receive: Receive, *_: str) -> Reply:
        return Reply(200 if self.engine.live else 400, b"")

    async def ready(self, scope: Scope, receive: Receive, *_: str) -> Reply:
        return Reply(200 if self.engine.ready else 400, b"")

    async def no_model_name(self, scope: Scope, receive: Receive, *_: str) -> Reply:
        return _json({"error": "the path needs a model name: /v2/models/<name>/..."}, 400)

    async def all_statistics(self, scope: Scope, receive: Receive, *_: str) -> Reply:
        return _json({"model_stats": self.engine.statistics()})

    async def model_metadata(
        self, scope: Scope, receive: Receive, model: str, version: str
    ) -> Reply:
        return _json(self.engine.model_metadata(model, version))

    async def model_ready(self, scope: Scope, receive: Receive, model: str, version: str) -> Reply:
        return Reply(200 if self.engine.model_ready(model, version) else 400, b"")

    async def model_config(self, scope: Scope, receive: Receive, model: str, version: str) -> Reply:
        return _json(self.engine.model_config(model, version))

    async def model_statistics(
        self, scope: Scope, receive: Receive, model: str, version: str
    ) -> Reply:
        return _json({"model_stats": self.engine.statistics(model, version)})

    async def repository_index(self, scope: Scope, receive: Receive, *_: str) -> Reply:
        doc = _loads_optional(await self._body(scope, receive))
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput("Invalid value for 'ready': expected a boolean")
        return _json(self.engine.repository_index(ready))

    async def load(self, scope: Scope, receive: Receive, model: str, version: str) -> Reply:
        doc = _loads_optional(await self._body(scope, receive))
        self.engine.check_control()
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput("'parameters' of a load request must be an object")
        await self.engine.load(model, load_config(params))
        return Reply(200, b"")

    async def unload(self, scope: Scope, receive: Receive, model: str, version: str) -> Reply:
        _loads_optional(await self._body(scope, receive))  # checked, though nothing is read yet
        self.engine.check_control()
        await self.engine.unload(model)
        return Reply(200, b"")

    async def infer(self, scope: Scope, receive: Receive, model: str, version: str) -> Reply:
        header_length, encoding, accept = infer_headers(scope)
        self.engine.check_admission(model, version)  # a refusal before reading the body
        body = await self._body(scope, receive)
        request = await self.decode(body, header_length, encoding, model, version)
        scope[WAITING_TASK] = asyncio.current_task()  # cancelled if the client goes away
        try:
            response = await self.engine.infer(request)
        finally:
            del scope[WAITING_TASK]
        return infer_reply(response, request, accept)

    async def decode(
        self, body: bytes, header_length: int | None, encoding: bytes, model: str, version: str
    ) -> InferRequest:
        """An infer request's body as the engine takes it (decompressed first if need be)."""
        if encoding:
            # zlib lets other threads run while it works: a large body does not stall the loop
            limit = self.settings.http_max_input_size
            body = await asyncio.to_thread(_decompress, body, encoding, limit)
        return decode_request(body, header_length, model, version)

    # -- shared memory: (kind, region) from the path --------------------------------------------

    async def system_shm_status(self, scope: Scope, receive: Receive, region: str, _: str) -> Reply:
        return _json(self.engine.shared_memory.status("system", region))

    async def cuda_shm_status(self, scope: Scope, receive: Receive, region: str, _: str) -> Reply:
        return _json(self.engine.shared_memory.status("cuda", region))

    async def system_shm_register(
        self, scope: Scope, receive: Receive, region: str, _: str
    ) -> Reply:
        body = await self._body(scope, receive)
        self.engine.shared_memory.check_allowed()
        doc = _loads_optional(body)
        if "key" not in doc:
            raise InvalidInput("Shared memory register request has no 'key' field")
        if "byte_size" not in doc:
            raise InvalidInput("Shared memory register request has no 'byte_size' field")
        key = doc["key"]
        if not isinstance(key, str):
            raise InvalidInput("Shared memory register request: 'key' must be a string")
        self.engine.shared_memory.register_system(
            region, key, _uint(doc, "offset"), _uint(doc, "byte_size")
        )
        return Reply(200, b"")

    async def cuda_shm_register(self, scope: Scope, receive: Receive, region: str, _: str) -> Reply:
        body = await self._body(scope, receive)
        self.engine.shared_memory.check_allowed()
        doc = _loads_optional(body)
        handle = doc.get("raw_handle")
        if not isinstance(handle, dict) or not isinstance(handle.get("b64"), str):
            raise InvalidInput("Shared memory register request has no 'raw_handle' field")
        try:
            raw = base64.b64decode(handle["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(
                "'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t"
            ) from None
        self.engine.shared_memory.register_cuda(
            region, raw, _uint(doc, "device_id"), _uint(doc, "byte_size")
        )
        return Reply(200, b"")

    async def system_shm_unregister(
        self, scope: Scope, receive: Receive, region: str, _: str
    ) -> Reply:
        self.engine.shared_memory.unregister("system", region)
        return Reply(200, b"")

    async def cuda_shm_unregister(
        self, scope: Scope, receive: Receive, region: str, _: str
    ) -> Reply:
        self.engine.shared_memory.unregister("cuda", region)
        return Reply(200, b"")

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.http_max_input_size
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise RequestTooLarge(
                    f"request JSON size of {int(value)} bytes exceeds the maximum allowed input "
                    f"size of {limit} bytes. Use --http-max-input-size to increase the limit."
                )
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("the client closed the connection before the body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(
                    f"request JSON size of more than {limit} bytes exceeds the maximum allowed "
                    f"input size of {limit} bytes. Use --http-max-input-size to increase the limit."
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def infer_headers(scope: Scope) -> tuple[int | None, bytes, bytes]:
    """An infer request's Inference-Header-Content-Length (None when absent), Content-Encoding
    and Accept-Encoding."""
    header_length = None
    encoding = b""
    accept = b""
    for key, value in scope["headers"]:
        if key == b"inference-header-content-length":
            if not value.isdigit():  # int() would also take "+5", " 5 " and "5_0"
                raise InvalidInput(
                    f"Inference-Header-Content-Length '{value.decode(errors='replace')}' "
                    "is not a byte count (decimal digits only)"
                )
            header_length = int(value)
        elif key == b"content-encoding":
            encoding = value.lower()
        elif key == b"accept-encoding":
            accept = value
    return header_length, encoding, accept


def infer_reply(response: InferResponse, request: InferRequest, accept: bytes) -> Reply:
    """The 200 reply to an infer request: JSON, or JSON and binary tensors, compressed as the
    client's Accept-Encoding asks."""
    payload, json_length = encode_response(response, request)
    headers = list(_JSON)
    if json_length is not None:
        headers = [
            (b"content-type", b"application/octet-stream"),
            (HEADER_LENGTH.encode(), str(json_length).encode()),
        ]
    compression = _response_encoding(accept) if accept else ""
    if compression:
        # The header length still counts the JSON before compression, as in tritonserver.
        payload = _compress(payload, compression)
        headers.append((b"content-encoding", compression.encode()))
    return Reply(200, payload, headers)


def _response_encoding(accept: bytes) -> str:
    """The Accept-Encoding choice tritonserver makes: the highest-weighted of gzip, deflate
    and identity ("" = identity)."""
    best, weight = "", 0.0
    for part in accept.decode("latin-1").split(","):
        kind, _, q = part.strip().partition(";q=")
        try:
            value = float(q) if q else 1.0
        except ValueError:
            continue
        if kind in ("gzip", "deflate", "identity") and value > weight:
            best, weight = ("" if kind == "identity" else kind), value
    return best


def _compress(payload: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(payload, compresslevel=6)
    return zlib.compress(payload)


_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """The body decompressed, refused as soon as it passes `limit` bytes: the limit on the
    body holds for what it decompresses to, not only for what came over the wire."""
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise InvalidInput(
            f"Content-Encoding '{encoding.decode(errors='replace')}' is not supported "
            "(gzip, deflate)"
        )
    name = encoding.decode()
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)  # stops one byte past the limit
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {name} data: {exc}") from None
    if len(data) > limit:
        raise RequestTooLarge(
            f"the {name} body decompresses to more than the limit of {limit} bytes "
            "(--http-max-input-size)"
        )
    if not inflater.eof or inflater.unused_data:
        raise InvalidInput(
            f"the body is not valid {name} data: "
            + ("it ends early" if not inflater.eof else "bytes follow the end of its stream")
        )
    return data


def _uint(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"Unable to parse '{key}': expected a non-negative integer")
    return value


def _loads_optional(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object")
    return doc


Handler = Callable[[HttpApp, Scope, Receive, str, str], Awaitable[Reply]]

#: Every endpoint: (method or None for any, path, handler). The placeholders are `{model}` (or
#: `{region}`, a shared memory region, passed in its place) and `{version}`; a literal segment
#: wins over a placeholder (`/v2/models/stats`).
ROUTES: tuple[tuple[str | None, str, Handler], ...] = (
    ("POST", "/v2/models/{model}/infer", HttpApp.infer),
    ("POST", "/v2/models/{model}/versions/{version}/infer", HttpApp.infer),
    (None, "/v2", HttpApp.server_metadata),
    (None, "/v2/health/live", HttpApp.live),
    (None, "/v2/health/ready", HttpApp.ready),
    (None, "/v2/models", HttpApp.no_model_name),
    (None, "/v2/models/stats", HttpApp.all_statistics),
    (None, "/v2/models/{model}", HttpApp.model_metadata),
    (None, "/v2/models/{model}/versions/{version}", HttpApp.model_metadata),
    (None, "/v2/models/{model}/ready", HttpApp.model_ready),
    (None, "/v2/models/{model}/versions/{version}/ready", HttpApp.model_ready),
    (None, "/v2/models/{model}/config", HttpApp.model_config),
    (None, "/v2/models/{model}/versions/{version}/config", HttpApp.model_config),
    (None, "/v2/models/{model}/stats", HttpApp.model_statistics),
    (None, "/v2/models/{model}/versions/{version}/stats", HttpApp.model_statistics),
    ("POST", "/v2/repository/index", HttpApp.repository_index),
    ("POST", "/v2/repository/models/{model}/load", HttpApp.load),
    ("POST", "/v2/repository/models/{model}/unload", HttpApp.unload),
    ("GET", "/v2/systemsharedmemory/status", HttpApp.system_shm_status),
    ("GET", "/v2/systemsharedmemory/region/{region}/status", HttpApp.system_shm_status),
    ("POST", "/v2/systemsharedmemory/region/{region}/register", HttpApp.system_shm_register),
    ("POST", "/v2/systemsharedmemory/unregister", HttpApp.system_shm_unregister),
    ("POST", "/v2/systemsharedmemory/region/{region}/unregister", HttpApp.system_shm_unregister),
    ("GET", "/v2/cudasharedmemory/status", HttpApp.cuda_shm_status),
    ("GET", "/v2/cudasharedmemory/region/{region}/status", HttpApp.cuda_shm_status),
    ("POST", "/v2/cudasharedmemory/region/{region}/register", HttpApp.cuda_shm_register),
    ("POST", "/v2/cudasharedmemory/unregister", HttpApp.cuda_shm_unregister),
    ("POST", "/v2/cudasharedmemory/region/{region}/unregister", HttpApp.cuda_shm_unregister),
)


#: Each handler's group of endpoints, as Triton names them (--http-restricted-api).
API_GROUP: dict[Handler, str] = {
    HttpApp.infer: "inference",
    HttpApp.server_metadata: "metadata",
    HttpApp.no_model_name: "metadata",
    HttpApp.model_metadata: "metadata",
    HttpApp.live: "health",
    HttpApp.ready: "health",
    HttpApp.model_ready: "health",
    HttpApp.model_config: "model-config",
    HttpApp.all_statistics: "statistics",
    HttpApp.model_statistics: "statistics",
    HttpApp.repository_index: "model-repository",
    HttpApp.load: "model-repository",
    HttpApp.unload: "model-repository",
    HttpApp.system_shm_status: "shared-memory",
    HttpApp.system_shm_register: "shared-memory",
    HttpApp.system_shm_unregister: "shared-memory",
    HttpApp.cuda_shm_status: "shared-memory",
    HttpApp.cuda_shm_register: "shared-memory",
    HttpApp.cuda_shm_unregister: "shared-memory",
}

#: Handlers that change the server's state, which a browser's cross-origin request must not
#: reach (_from_a_browser).
CHANGES_STATE: frozenset[Handler] = frozenset(
    {
        HttpApp.load,
        HttpApp.unload,
        HttpApp.system_shm_register,
        HttpApp.system_shm_unregister,
        HttpApp.cuda_shm_register,
        HttpApp.cuda_shm_unregister,
    }
)

# Content types a web page may POST to any origin without a CORS preflight. The form type is
# also what curl, and so Triton's C++ client and perf_analyzer, send with a POST body: it is
# refused only with a browser's marks on the request (every current browser sends Origin and
# Sec-Fetch-* with a POST; older ones a Referer).
_SIMPLE_TYPES = (b"text/plain", b"multipart/form-data")
_FORM = b"application/x-www-form-urlencoded"
_BROWSER_MARKS = (b"origin", b"sec-fetch-site", b"sec-fetch-mode", b"referer")


def _from_a_browser(headers: list[tuple[bytes, bytes]]) -> str:
    """Why a request looks like one a web page sent across origins ("" if it doesn't): a
    content type a page may send without a preflight, or an Origin other than the server's."""
    found = dict(headers)
    kind = found.get(b"content-type", b"").split(b";")[0].strip().lower()
    if kind in _SIMPLE_TYPES or (kind == _FORM and any(mark in found for mark in _BROWSER_MARKS)):
        return f"refused a request with Content-Type {kind.decode()}"
    origin = found.get(b"origin")
    if origin is not None and origin.partition(b"://")[2] != found.get(b"host"):
        return f"refused a request from origin {origin.decode(errors='replace')}"
    return ""


class _Route:
    """A row of ROUTES made ready for matching: the literal segments to compare (all but the
    last, which the table's key matched) and where the placeholders sit (-1 where absent)."""

    __slots__ = ("method", "handler", "literals", "model_at", "version_at")

    def __init__(self, method: str | None, segments: list[str], handler: Handler) -> None:
        self.method = method
        self.handler = handler
        self.literals = tuple((i, s) for i, s in enumerate(segments[:-1]) if not s.startswith("{"))
        named = "{model}" if "{model}" in segments else "{region}"
        self.model_at = segments.index(named) if named in segments else -1
        self.version_at = segments.index("{version}") if "{version}" in segments else -1


def _table(
    routes: tuple[tuple[str | None, str, Handler], ...],
) -> dict[tuple[int, str | None], list[_Route]]:
    """Candidate routes by (segment count, last segment): a path looks up its own pair, else
    (count, None). A pair's list holds the routes that end in that literal, then those of the
    same length that end in a placeholder, so a literal wins (`/v2/models/stats`) and a model
    may still be named like one (`/v2/models/ready`)."""
    table: dict[tuple[int, str | None], list[_Route]] = {}
    ending_in_placeholder: dict[int, list[_Route]] = {}
    for method, path, handler in routes:
        segments = path.strip("/").split("/")
        route = _Route(method, segments, handler)
        if segments[-1].startswith("{"):
            ending_in_placeholder.setdefault(len(segments), []).append(route)
        else:
            table.setdefault((len(segments), segments[-1]), []).append(route)
    for (n, _last), candidates in table.items():
        candidates += ending_in_placeholder.get(n, [])
    for n, candidates in ending_in_placeholder.items():
        table[(n, None)] = candidates
    return table


_TABLE = _table(ROUTES)

#: The handlers that read a request's body; the others answer without it, whatever it holds.
#: An HTTP worker forwards the body to the engine's process for these only, so that a body no
#: handler reads is not refused for its size there either (tests/frontends/test_http_workers.py
#: checks this set against the handlers' code).
READS_BODY: frozenset[Handler] = frozenset({
    HttpApp.infer, HttpApp.repository_index, HttpApp.load, HttpApp.unload,
    HttpApp.system_shm_register, HttpApp.cuda_shm_register,
})  # fmt: skip


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
