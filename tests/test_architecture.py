"""The house rules the import contracts (setup.cfg, ``tox -e lint``) cannot state: no
module uses another module's private names, and no module grows past ~500 lines without
its docstring saying why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import turso_dbapi

PACKAGE = Path(turso_dbapi.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "_native" not in p.parts or p.name == "__init__.py")
MAX_LINES = 500
PRIVATE_PACKAGES = {"_native", "_util", "_reference", "_tdb_native"}  # private to turso_dbapi, shared inside it


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    if node.level:
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PRIVATE_PACKAGES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_uses_another_modules_private_names(path):
    tree = ast.parse(path.read_text())
    me = _module_name(path)
    module_aliases = {}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(path, node)
            if not source.startswith("turso_dbapi") or source == me:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    problems.append(f"line {node.lineno}: from {source} import {alias.name}")
                module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("turso_dbapi"):
                    module_aliases[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases and _is_private(node.attr)):
            problems.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not problems, f"{me} uses private names of other modules: {problems}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_modules_stay_small_or_say_why(path):
    lines = path.read_text().count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "lines" in doc.lower(), (
        f"{_module_name(path)} has {lines} lines (> {MAX_LINES}); split it, or say in its "
        "docstring why it is one module")


def test_every_room_is_a_package_with_a_docstring():
    for room in ("_util", "storage", "fetch", "transport", "protocol", "sources", "replica",
                 "sync", "server", "cli"):
        init = PACKAGE / room / "__init__.py"
        assert init.exists(), room
        assert ast.get_docstring(ast.parse(init.read_text())), room
