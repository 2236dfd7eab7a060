"""No import circle anywhere in bertserve: not between packages, not between the modules of one
package, not between a package and its own submodules. The layer and side-package rules are
import-linter contracts in pyproject.toml; this is the one rule they cannot state whole."""

from __future__ import annotations

import grimp
import pytest


def circles(graph: grimp.ImportGraph) -> set[str]:
    """Each circle once, as "a -> b -> a", starting at its first module in sorted order."""
    found = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                circle = (module, *back[:-1])
                start = circle.index(min(circle))
                found.add(" -> ".join((*circle[start:], *circle[:start], circle[start])))
    return found


def test_no_module_imports_itself_through_others() -> None:
    found = circles(grimp.build_graph("bertserve"))  # TYPE_CHECKING imports count: they couple
    if found:
        pytest.fail("import circles (remove one import of each):\n" + "\n".join(sorted(found)))


def test_circles_are_found_at_any_depth() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c", "p.d", "q", "q.x"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")  # siblings
    graph.add_import(importer="p.c", imported="q.x")
    graph.add_import(importer="q.x", imported="p.c")  # across packages
    graph.add_import(importer="p", imported="p.d")
    graph.add_import(importer="p.d", imported="p")  # a package and its own submodule
    graph.add_import(importer="q", imported="p.a")  # no circle
    assert circles(graph) == {"p -> p.d -> p", "p.a -> p.b -> p.a", "p.c -> q.x -> p.c"}
