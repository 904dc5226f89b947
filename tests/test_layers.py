"""The engine's layering: phases never reach up into the command line, the demo, or a UI library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "operator" / "vector_migration"
ENGINE_MODULES = ["engine", "plan", "catalog", "surface", "measure", "journal", "backup", "status", "sql", "api"]
FORBIDDEN = {"kopf", "rich", "vector_migration.cli", "vector_migration.demo", ".cli", ".demo"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            prefix = "." * node.level
            names.add(f"{prefix}{node.module or ''}")
            names.add((node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_modules_import_no_ui_and_no_kopf(module: str) -> None:
    assert not imports_of(PACKAGE / f"{module}.py") & FORBIDDEN
