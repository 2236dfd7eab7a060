"""Every name in `__all__` of the build package and its modules exists."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "bertserve.builder",
    "bertserve.builder.workflow",
    "bertserve.builder.checkpoint",
    "bertserve.builder.errors",
    "bertserve.builder.export",
    "bertserve.builder.model_config",
    "bertserve.builder.optimization",
    "bertserve.builder.outcome",
    "bertserve.builder.parity",
    "bertserve.builder.presets",
    "bertserve.builder.samples",
    "bertserve.builder.staging",
    "bertserve.builder.vocabulary",
    "bertserve.commands.build",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_explicit_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, name
    for member in module.__all__:
        assert hasattr(module, member), f"{name}.{member}"


def test_command_module_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bertserve.commands.build, bertserve.builder; "
        "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
