"""The engine façade: model table, readiness, load/unload, infer, statistics."""

from bertserve.engine.core import Engine
from bertserve.engine.table import ModelState

__all__ = ["Engine", "ModelState"]
