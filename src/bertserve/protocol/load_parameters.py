"""The parameters of a model load request, read the same way for HTTP and gRPC.

Both protocols carry a `config` parameter (the model config as a JSON string) and may carry
`file:<path>` parameters (model files in the request), which this server does not take."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from bertserve.errors import InvalidInput, Unsupported

__all__ = ["load_config"]


def load_config(parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config override of a load request (None = use the repository's config.pbtxt)."""
    if any(key.startswith("file:") for key in parameters):
        raise Unsupported(
            "model files in the load request are not served here: put them in the "
            "model repository and load by name"
        )
    config = parameters.get("config")
    if config is None:
        return None
    try:
        doc = orjson.loads(config) if isinstance(config, (str, bytes)) else config
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"parameters.config is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("parameters.config must be a JSON object")
    return doc
