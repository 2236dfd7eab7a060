"""HTTP/REST front end: Triton's paths and JSON shapes over a bare ASGI app.

No framework and no per-request validation layer: the hot path is a path split, one body read,
the codec and the engine call."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bertserve.endpoints.status import http_status
from bertserve.engine import Engine
from bertserve.errors import BertserveError, InvalidInput, ModelNotFound
from bertserve.protocol.http_codec import HEADER_LENGTH, decode_request, encode_response
from bertserve.protocol.load_parameters import load_config
from bertserve.settings import ServerSettings

__all__ = ["HttpApp"]

log = logging.getLogger("bertserve.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


class _Reply:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes = b"", headers: list | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else _JSON


def _json(doc: Any, status: int = 200) -> _Reply:
    return _Reply(status, orjson.dumps(doc))


def _error(error: BaseException) -> _Reply:
    return _json({"error": str(error)}, http_status(error))


class HttpApp:
    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            reply = await self._route(scope, receive)
        except BertserveError as exc:
            reply = _error(exc)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            reply = _json({"error": f"internal error: {exc}"}, 500)
        headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _route(self, scope: Scope, receive: Receive) -> _Reply:
        method = scope["method"]
        parts = scope["path"].strip("/").split("/")
        if not parts or parts[0] != "v2":
            return _json({"error": f"unknown path '{scope['path']}'"}, 404)
        n = len(parts)
        engine = self.engine
        if n == 1:
            return _json(engine.server_metadata())
        head = parts[1]
        if head == "health" and n == 3:
            ok = (
                engine.live if parts[2] == "live" else engine.ready if parts[2] == "ready" else None
            )
            if ok is None:
                return _json({"error": f"unknown path '{scope['path']}'"}, 404)
            return _Reply(200 if ok else 400, b"")
        if head == "models":
            return await self._models(scope, receive, method, parts)
        if head == "repository":
            return await self._repository(scope, receive, parts)
        return _json({"error": f"unknown path '{scope['path']}'"}, 404)

    async def _models(
        self, scope: Scope, receive: Receive, method: str, parts: list[str]
    ) -> _Reply:
        engine = self.engine
        if len(parts) == 3 and parts[2] == "stats":
            return _json({"model_stats": engine.statistics()})
        if len(parts) < 3:
            return _json({"error": "the path needs a model name: /v2/models/<name>/..."}, 400)
        name = parts[2]
        rest = parts[3:]
        version = ""
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1:
            return _json({"error": f"unknown path '{scope['path']}'"}, 404)
        if action == "infer":
            if method != "POST":
                return _json({"error": "infer takes POST"}, 405)
            return await self._infer(scope, receive, name, version)
        if action == "":
            return _json(engine.model_metadata(name, version))
        if action == "ready":
            if name not in engine.models:
                raise ModelNotFound(f"unknown model '{name}'")
            return _Reply(200 if engine.model_ready(name, version) else 400, b"")
        if action == "config":
            return _json(engine.model_config(name, version))
        if action == "stats":
            return _json({"model_stats": engine.statistics(name, version)})
        return _json({"error": f"unknown path '{scope['path']}'"}, 404)

    async def _infer(self, scope: Scope, receive: Receive, name: str, version: str) -> _Reply:
        header_length = None
        encoding = b""
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                try:
                    header_length = int(value)
                except ValueError:
                    raise InvalidInput(
                        f"Inference-Header-Content-Length '{value.decode(errors='replace')}' "
                        "is not an integer"
                    ) from None
            elif key == b"content-encoding":
                encoding = value.lower()
        body = await self._body(scope, receive)
        if encoding:
            body = _decompress(body, encoding)
        request = decode_request(body, header_length, name, version)
        response = await self.engine.infer(request)
        payload, json_length = encode_response(response, request)
        if json_length is None:
            return _Reply(200, payload)
        return _Reply(
            200,
            payload,
            [
                (b"content-type", b"application/octet-stream"),
                (HEADER_LENGTH.encode(), str(json_length).encode()),
            ],
        )

    async def _repository(self, scope: Scope, receive: Receive, parts: list[str]) -> _Reply:
        engine = self.engine
        if scope["method"] != "POST":
            return _json({"error": "repository requests take POST"}, 405)
        if len(parts) == 3 and parts[2] == "index":
            doc = _loads_optional(await self._body(scope, receive))
            return _json(engine.repository_index(bool(doc.get("ready", False))))
        if len(parts) == 5 and parts[2] == "models" and parts[4] in ("load", "unload"):
            name = parts[3]
            doc = _loads_optional(await self._body(scope, receive))
            engine.check_control()
            if parts[4] == "unload":
                await engine.unload(name)
                return _Reply(200, b"")
            params = doc.get("parameters") or {}
            if not isinstance(params, dict):
                raise InvalidInput("'parameters' of a load request must be an object")
            config_json = load_config(params)
            await engine.load(name, config_json)
            return _Reply(200, b"")
        return _json({"error": f"unknown path '{scope['path']}'"}, 404)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.http_max_input_size
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise InvalidInput(
                    f"request body of {int(value)} bytes exceeds the limit of {limit} bytes "
                    "(--http-max-input-size)"
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
                raise InvalidInput(
                    f"request body exceeds the limit of {limit} bytes (--http-max-input-size)"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decompress(body: bytes, encoding: bytes) -> bytes:
    try:
        if encoding == b"gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == b"deflate":
            return zlib.decompress(body)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding.decode()} data: {exc}") from None
    raise InvalidInput(f"Content-Encoding '{encoding.decode()}' is not supported (gzip, deflate)")


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


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
