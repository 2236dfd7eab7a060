"""Every perf module says what is public, and exports only what exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bertserve.perf

MODULES = sorted(
    name for _, name, _ in pkgutil.iter_modules(bertserve.perf.__path__, "bertserve.perf.")
) + ["bertserve.commands.perf", "bertserve.commands.demo"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_explicit_and_true(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.__all__ names missing {public}"
