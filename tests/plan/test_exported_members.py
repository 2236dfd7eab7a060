"""Every module of the planner says what is public, and it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bertserve.plan

MODULES = [
    "bertserve.plan",
    "bertserve.commands.plan",
    *(
        info.name
        for info in pkgutil.iter_modules(bertserve.plan.__path__, bertserve.plan.__name__ + ".")
    ),
]


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(set(exported)) == len(exported)
    for member in exported:
        assert hasattr(module, member), f"{name}.{member}"
    if name != "bertserve.plan":
        assert exported, name
