"""Every module of the results, cost and report code says what is public, and it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bertserve.cost
import bertserve.report

MODULES = (
    ["bertserve.perf.results", "bertserve.commands.report"]
    + [
        info.name
        for package in (bertserve.cost, bertserve.report)
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
    ]
    + ["bertserve.cost", "bertserve.report"]
)


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported, name
    assert len(set(exported)) == len(exported)
    for member in exported:
        assert hasattr(module, member), f"{name}.{member}"
