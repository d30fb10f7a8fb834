"""The package has no import cycle.

Two graphs of ``docutray_watch`` modules are checked. The import-time graph has the
imports that run when a module is imported (not those under ``if TYPE_CHECKING:`` or
inside functions): a cycle there can break depending on which module is imported first.
The full graph adds the deferred ones: a cycle hidden behind a function-level or
type-checking import still ties two modules together (issue 14 found
``sinks/_sqltable.py`` <-> ``sinks/database.py`` and ``client/_base.py`` <-> ``client/_retry.py``
that way), so it fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import docutray_watch

PACKAGE = "docutray_watch"
ROOT = Path(docutray_watch.__file__).resolve().parent


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, wherever it is (functions, ``TYPE_CHECKING`` blocks...)."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports executed when the module is imported (not in functions or TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With, ast.AsyncWith, ast.ClassDef)):
                visit(node.body)  # a class body runs at import time; a function body does not

    visit(tree.body)
    return found


def import_graph(root: Path, package: str, *, deferred: bool) -> dict[str, set[str]]:
    """Map every module of ``package`` to the package modules it imports.

    Only the imports run at import time, or with ``deferred`` every import statement.
    """
    imports_of = _all_imports if deferred else _module_level_imports
    modules = {
        _module_name(p, root, package): p
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        # the package a relative import of level 1 resolves against
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in imports_of(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    stem = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # ``from pkg import mod`` imports the submodule ``pkg.mod`` when there is one
                targets = [stem]
                targets += [
                    f"{stem}.{alias.name}"
                    for alias in node.names
                    if f"{stem}.{alias.name}" in modules
                ]
            for target in targets:
                # importing a.b.c imports a and a.b first; each is an edge
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in modules and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(_cycle_in(sorted(component), graph))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return components


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}

    def walk(v: str) -> bool:
        for w in sorted(graph[v] & members):
            if w == start:
                path.append(start)
                return True
            if w not in seen:
                seen.add(w)
                path.append(w)
                if walk(w):
                    return True
                path.pop()
        return False

    walk(start)
    return path


@pytest.mark.parametrize("deferred", [False, True], ids=["import-time", "with-deferred"])
def test_package_has_no_import_cycle(deferred: bool) -> None:
    """No docutray_watch module imports itself back, at import time or through deferred imports."""
    cycles = find_cycles(import_graph(ROOT, PACKAGE, deferred=deferred))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_finds_a_cycle_at_import_time(tmp_path: Path) -> None:
    """Two modules importing each other at module level are reported, relative imports too."""
    package = _write_package(
        tmp_path,
        {"a.py": "from pkg import b\n", "b.py": "from .a import thing\n", "c.py": "import pkg.a\n"},
    )
    assert find_cycles(import_graph(package, "pkg", deferred=False)) == [
        ["pkg.a", "pkg.b", "pkg.a"]
    ]


def test_finds_the_cycles_issue_14_named(tmp_path: Path) -> None:
    """The old shapes: a cycle closed by a function-level import, and one by TYPE_CHECKING."""
    package = _write_package(
        tmp_path,
        {
            # sinks/_sqltable.py <-> sinks/database.py
            "sinks/__init__.py": "",
            "sinks/_sqltable.py": "from pkg.sinks.database import DatabaseConfig\n",
            "sinks/database.py": "def writer():\n    from pkg.sinks import _sqltable\n",
            # client/_base.py <-> client/_retry.py
            "client/__init__.py": "",
            "client/_base.py": "from pkg.client._retry import RetryPolicy\n",
            "client/_retry.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.client._base import RequestSpec\n"
            ),
        },
    )
    assert find_cycles(import_graph(package, "pkg", deferred=False)) == []
    assert find_cycles(import_graph(package, "pkg", deferred=True)) == [
        ["pkg.client._base", "pkg.client._retry", "pkg.client._base"],
        ["pkg.sinks._sqltable", "pkg.sinks.database", "pkg.sinks._sqltable"],
    ]


def test_a_package_importing_its_own_submodule_is_no_cycle(tmp_path: Path) -> None:
    """A package's __init__ re-exporting a submodule is not a cycle with that submodule."""
    package = _write_package(
        tmp_path,
        {"sub/__init__.py": "from pkg.sub.impl import X\n", "sub/impl.py": "X = 1\n"},
    )
    assert find_cycles(import_graph(package, "pkg", deferred=True)) == []
