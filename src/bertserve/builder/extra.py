"""Whether the `build` extra (PyTorch and friends) is installed: building a model needs it,
serving one does not, and a missing module should read as one sentence, not a traceback."""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["BUILD_EXTRA_MODULES", "missing_build_extra"]

#: Modules the `build` extra of pyproject.toml brings, by import name.
BUILD_EXTRA_MODULES = ("torch", "transformers", "onnxscript", "huggingface_hub")


def missing_build_extra(command: str) -> str | None:
    """One sentence naming the extra to install when a module of it is missing; else None."""
    missing = [name for name in BUILD_EXTRA_MODULES if not _importable(name)]
    if not missing:
        return None
    return (
        f"bertserve {command} needs the build extra ({', '.join(missing)} missing): "
        "pip install 'bertserve[build]'"
    )


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
