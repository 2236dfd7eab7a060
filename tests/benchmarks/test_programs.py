"""Every benchmark program imports and explains itself (`--help`), and no benchmark module keeps
state at module level: a benchmark is a function of its arguments."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
MODULES = sorted(BENCHMARKS.glob("*.py"))
PROGRAMS = [p for p in MODULES if 'if __name__ == "__main__":' in p.read_text()]
#: Calls that make a mutable container.
_MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "Counter", "deque"}
_MUTABLE_NODES = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)


def test_there_are_programs() -> None:
    names = {p.name for p in PROGRAMS}
    assert {"compare_servers.py", "grpc_vs_http.py", "serve_pytriton.py"} <= names


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_help(program: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(program), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def _mutable_state(tree: ast.Module) -> list[str]:
    found = [f"line {n.lineno}: global" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if all(n.startswith("__") for n in names):
            continue  # __all__ and friends
        call = value.func if isinstance(value, ast.Call) else None
        called = call.id if isinstance(call, ast.Name) else getattr(call, "attr", None)
        if isinstance(value, _MUTABLE_NODES) or called in _MUTABLE_CALLS:
            found.append(f"line {node.lineno}: {', '.join(names)}")
    return found


def test_the_check_finds_mutable_state() -> None:
    tree = ast.parse("A = {}\nB = defaultdict(list)\n__all__ = []\nC = (1,)\ndef f():\n global C")
    assert _mutable_state(tree) == ["line 6: global", "line 1: A", "line 2: B"]


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_module_level_mutable_state(module: Path) -> None:
    assert _mutable_state(ast.parse(module.read_text())) == []
