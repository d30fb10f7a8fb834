"""Tests of the journal's shape: the typed `StateStore` boundary, module sizes, no import cycle."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

import docutray_watch.journal
from docutray_watch.journal import SqliteStore, StateStore

PACKAGE_DIR = Path(docutray_watch.journal.__file__).parent
PROTOCOL_METHODS = sorted(
    name
    for name, value in vars(StateStore).items()
    if not name.startswith("_") and (callable(value) or isinstance(value, property))
)


def _contains_any(hint: object) -> bool:
    if hint is typing.Any:
        return True
    return any(_contains_any(arg) for arg in typing.get_args(hint))


def _hints(name: str) -> dict[str, object]:
    member = vars(StateStore)[name]
    function = member.fget if isinstance(member, property) else member
    return typing.get_type_hints(function)


class TestStateStore:
    def test_the_protocol_has_the_engines_methods(self) -> None:
        """The protocol spells out the calls the engine makes (a sample of them)."""
        for name in ("step_submitting", "step_accepted", "finish_step", "delivery_done", "probe"):
            assert name in PROTOCOL_METHODS

    @pytest.mark.parametrize("name", PROTOCOL_METHODS)
    def test_no_method_hint_contains_any(self, name: str) -> None:
        """Every parameter and return type of every StateStore method is free of `Any`."""
        hints = _hints(name)
        assert "return" in hints, f"{name} has no return annotation"
        offending = {param: hint for param, hint in hints.items() if _contains_any(hint)}
        assert not offending, f"StateStore.{name}: {offending}"

    @pytest.mark.parametrize("name", PROTOCOL_METHODS)
    def test_sqlite_store_implements_each_method_with_the_same_signature(self, name: str) -> None:
        """SqliteStore defines every protocol method itself (no `__getattr__`), same parameters."""
        assert not hasattr(SqliteStore, "__getattr__")
        protocol_member = vars(StateStore)[name]
        implementation = inspect.getattr_static(SqliteStore, name)
        if isinstance(protocol_member, property):
            assert isinstance(implementation, property)
            return
        assert inspect.iscoroutinefunction(implementation), name
        expected = inspect.signature(protocol_member)
        found = inspect.signature(implementation)
        assert list(found.parameters) == list(expected.parameters), name
        for param, spec in expected.parameters.items():
            assert found.parameters[param].kind == spec.kind, (name, param)
            assert found.parameters[param].default == spec.default, (name, param)

    def test_a_sqlite_store_is_a_state_store(self, tmp_path: Path) -> None:
        """The runtime check agrees with mypy: SqliteStore satisfies StateStore."""
        assert isinstance(SqliteStore(tmp_path / "journal.sqlite3"), StateStore)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that `module` imports (a `from pkg import sub` counts `pkg.sub`)."""
    edges = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    edges.add(target)
                elif base in known:
                    edges.add(base)
    edges.discard(module)
    return edges


class TestPackageShape:
    def test_no_import_cycle(self) -> None:
        """The journal package's modules import each other without a cycle."""
        modules = _modules()
        graph = {m: _imports(m, p, set(modules)) for m, p in modules.items()}
        done: set[str] = set()

        def visit(module: str, trail: list[str]) -> None:
            if module in trail:
                cycle = [*trail[trail.index(module) :], module]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if module in done:
                return
            for target in sorted(graph[module]):
                visit(target, [*trail, module])
            done.add(module)

        for module in sorted(graph):
            visit(module, [])
        assert "docutray_watch.journal.store" in graph

    def test_submodules_do_not_import_the_package_facade(self) -> None:
        """Only outside code uses `docutray_watch.journal`; inside, modules import modules."""
        modules = _modules()
        for module, path in modules.items():
            if module == "docutray_watch.journal":
                continue
            assert "docutray_watch.journal" not in _imports(module, path, set(modules)), module

    def test_no_module_is_over_500_lines(self) -> None:
        """Every module of the journal package stays readable (at most 500 lines)."""
        sizes = {str(p.relative_to(PACKAGE_DIR)): len(p.read_text().splitlines()) for p in
                 PACKAGE_DIR.rglob("*.py")}  # fmt: skip
        assert max(sizes.values()) <= 500, sizes
