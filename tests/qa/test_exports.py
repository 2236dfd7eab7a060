"""Public names are declared and exist; CLI modules stay light to import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MODULES = [
    "bertserve.qa.texts",
    "bertserve.qa.windows",
    "bertserve.qa.buckets",
    "bertserve.qa.spans",
    "bertserve.qa.squad",
    "bertserve.qa.metrics",
    "bertserve.qa.evaluation",
    "bertserve.qa.client",
    "bertserve.backends.qa_pipeline",
    "bertserve.commands.ask",
    "bertserve.commands.eval",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, f"{name} declares no public names"
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.__all__ lists missing {public}"


def test_cli_modules_import_light() -> None:
    code = (
        "import sys, bertserve.commands.ask, bertserve.commands.eval\n"
        "heavy = [m for m in ('tritonclient', 'tokenizers', 'numpy', 'onnxruntime', 'torch')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_parses_ask_and_eval() -> None:
    from bertserve.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["ask", "-m", "qa", "Why?", "--context", "Because."])
    assert (args.model, args.question, args.context) == ("qa", "Why?", "Because.")
    args = parser.parse_args(["eval", "--compare", "a", "b", "-u", "h:1"])
    assert args.compare == ["a", "b"] and args.url == "h:1"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "-m", "a", "--compare", "b"])
