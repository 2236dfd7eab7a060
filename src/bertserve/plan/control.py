"""The server's model repository API, as the planner uses it: read a model's config, load it
with a config override, unload it, list the repository. Over HTTP or gRPC through
tritonclient, so any server speaking Triton's repository extension will do."""

from __future__ import annotations

import uuid
from typing import Any

from tritonclient.grpc import model_config_pb2

from bertserve.errors import BertserveError
from bertserve.plan.knobs import config_from_json, config_json

__all__ = ["ControlError", "ModelControl"]

#: Loading a large model (a GPU engine capturing its graphs) can take minutes.
LOAD_TIMEOUT_S = 900.0


class ControlError(BertserveError):
    """The server refused a repository call or could not be reached; the message says which."""


class ModelControl:
    """One server's repository API (`url` is host:port of its `protocol` service)."""

    def __init__(self, url: str, protocol: str) -> None:
        self.url = url
        self.protocol = protocol
        try:
            if protocol == "grpc":
                import tritonclient.grpc as grpcclient

                self._client: Any = grpcclient.InferenceServerClient(url)
            else:
                import tritonclient.http as httpclient

                self._client = httpclient.InferenceServerClient(
                    url, connection_timeout=30.0, network_timeout=LOAD_TIMEOUT_S
                )
        except Exception as exc:  # noqa: BLE001 - tritonclient raises several kinds
            raise ControlError(f"-u {url}: {exc}") from None

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        if self.protocol == "grpc" and method in ("load_model", "unload_model"):
            kwargs.setdefault("client_timeout", LOAD_TIMEOUT_S)
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except InferenceServerException as exc:
            raise ControlError(f"{what}: {exc.message() or exc}") from None
        except Exception as exc:  # noqa: BLE001 - connection errors of either client
            raise ControlError(f"{what}: cannot reach the server at {self.url}: {exc}") from None

    def live(self) -> bool:
        return bool(self._call("server liveness", "is_server_live"))

    def check_explicit(self) -> None:
        """Raise ControlError unless the server takes load and unload requests. Unloading a
        model that does not exist is harmless, and the refusal says why."""
        probe = f"bertserve-plan-probe-{uuid.uuid4().hex[:8]}"
        try:
            self._call("probe", "unload_model", probe)
        except ControlError as exc:
            if "not allowed" in str(exc) or "polling is enabled" in str(exc):
                raise ControlError(
                    "the server does not take load requests (it is not in explicit "
                    "model-control mode); restart it with --model-control-mode explicit "
                    f"(and --load-model NAME): {exc}"
                ) from None

    def index(self) -> list[dict[str, str]]:
        """The repository index: name, version, state and reason of every model."""
        rows = self._call("repository index", "get_model_repository_index", **self._json())
        if isinstance(rows, dict):  # gRPC's as_json form
            rows = rows.get("models", [])
        return [{k: str(v) for k, v in row.items()} for row in rows]

    def ready(self, model: str) -> bool:
        return bool(self._call(f"readiness of '{model}'", "is_model_ready", model))

    def config(self, model: str) -> model_config_pb2.ModelConfig:
        doc = self._call(f"config of '{model}'", "get_model_config", model, **self._json())
        return config_from_json(doc)

    def load(self, model: str, config: model_config_pb2.ModelConfig | None = None) -> None:
        """Load (or reload) `model`, with `config` as the override when given."""
        override = config_json(config) if config is not None else None
        self._call(f"load of '{model}'", "load_model", model, config=override)
        if not self.ready(model):
            raise ControlError(f"load of '{model}': the server loaded it but it is not ready")

    def unload(self, model: str) -> None:
        self._call(f"unload of '{model}'", "unload_model", model)

    def close(self) -> None:
        self._client.close()

    def _json(self) -> dict[str, Any]:
        return {"as_json": True} if self.protocol == "grpc" else {}
