"""Backends run a batch of numpy tensors; they know nothing of the server.

Each is picked by the config's `backend` (or `platform`) name and imported lazily, so that
`import bertserve` never pulls in torch or onnxruntime.
"""

from bertserve.backends.base import (
    Backend,
    Device,
    LoadContext,
    ModelInstance,
    backend_for_config,
    get_backend,
)

__all__ = ["Backend", "Device", "LoadContext", "ModelInstance", "backend_for_config", "get_backend"]
