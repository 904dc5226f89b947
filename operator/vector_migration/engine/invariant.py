"""The catalog invariant: what a conversion plan changes, and the check that it changed nothing else.

``expected_of`` reads the plan as data: the columns it converts (their types), the indexes it
rebuilds or carries (access method, operator classes, and what it rewrites), the constraints,
defaults, views and functions it rewrites, the settings it carries, the extensions it swaps. The
strategy reads the catalog before its change and again before the change commits
(:func:`check_catalog`); any other difference raises :class:`CatalogLoss`, and the strategy's
transaction rolls back with nothing changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import asyncpg

from ..database.catalog import SourceInventory
from ..database.catalog_compare import SOURCE_NAMES, Comparison, Expected, compare
from ..database.catalog_state import CatalogState, read_catalog
from ..database.sql import qualify, quote_ident
from ..vocabulary import TransactionStep
from .plan import MigrationPlan
from .transactions import Progress

# How many differences a message names before it counts the rest.
SHOWN_DIFFERENCES = 5


class CatalogLoss(Exception):
    """The change would leave the catalog other than its plan says: it must not commit."""

    def __init__(self, comparison: Comparison, before: CatalogState | None = None) -> None:
        shown = "; ".join(str(d) for d in comparison.differences[:SHOWN_DIFFERENCES])
        more = len(comparison.differences) - SHOWN_DIFFERENCES
        super().__init__(
            f"{len(comparison.differences)} catalog difference(s) the plan does not make: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
        self.comparison = comparison
        self.before = before


async def changed_by_others(conn: asyncpg.Connection, loss: CatalogLoss) -> Comparison | None:
    """After the transaction rolled back: whether the catalog differs from the reading it began with.

    The reading is taken when the transaction begins, before its locks, so a change another session
    committed in between shows as a difference too. Read again once ours is gone: a catalog that is
    no longer the one read was changed by someone else (the change is tried again from the
    checklist); one that still is means the transaction itself would have lost what differed.
    """
    if loss.before is None:
        return None
    comparison = compare(loss.before, await read_catalog(conn), Expected())
    return comparison if comparison.differences else None


def type_ref(schema: str, name: str) -> str:
    """A type as the catalog reading names it."""
    return qualify(schema, name)


def expected_of(
    plan: MigrationPlan,
    inventory: SourceInventory,
    *,
    target_extension: str,
    target_schema: str,
    drops_source: bool = True,
    own: Iterable[str] = (),
    built_later: bool = False,
) -> Expected:
    """Everything the conversion plan changes, as the catalog reading will show it.

    ``drops_source``: the plan drops the source extension (InPlace and Rebuild; Parallel keeps it
    for the old tables). ``own`` are relations and publications the migration made for itself,
    quoted (and qualified). ``built_later``: no index the plan builds is there when the conversion
    commits (Replicate builds them on the new database once its rows are copied).
    """
    types: dict[str, str] = {}
    for conversion in plan.conversions:
        column, target = conversion.column, conversion.target_type
        types.setdefault(type_ref(column.type_schema, column.type_name), type_ref(target.schema, target.name))
        types.setdefault(
            type_ref(column.type_schema, "_" + column.type_name), type_ref(target.schema, "_" + target.name)
        )
    column_types = {
        f"column {qualify(c.column.schema, c.column.table)}.{quote_ident(c.column.column)}": type_ref(
            c.target_type.schema, ("_" if c.column.array else "") + c.target_type.name
        )
        for c in plan.conversions
    }
    changes, removed = _index_changes(plan, inventory, built_later)
    for key, names in _rewritten_changes(plan, inventory).items():
        changes.setdefault(key, set()).update(names)
    added = {f"extension {quote_ident(target_extension)}": "the target extension"}
    added[f"schema {quote_ident(target_schema)}"] = "the target extension's schema"
    added.update(_carried_settings(plan))
    if drops_source:
        removed[f"extension {quote_ident(inventory.source.name)}"] = "the source extension, replaced"
    return Expected(
        types=types,
        column_types=column_types,
        changes={key: frozenset(names) for key, names in changes.items()},
        added=added,
        removed=removed,
        own=frozenset(own),
    )


_AFTER_THE_SWAP = "built after the swap commits (reindex.mode: Concurrent)"
_AFTER_THE_COPY = "built on the new database once its rows are copied (Replicate)"


def _index_changes(
    plan: MigrationPlan, inventory: SourceInventory, built_later: bool
) -> tuple[dict[str, set[str]], dict[str, str]]:
    """What the plan changes of each index it rebuilds or carries, and the indexes absent when the swap commits."""
    changes: dict[str, set[str]] = {}
    removed: dict[str, str] = {}
    for rebuild in plan.rebuilds:
        key = f"index {qualify(rebuild.saved.schema, rebuild.saved.name)}"
        changes[key] = {"method", "operator classes", "options", "predicate"}
        if rebuild.concurrent:
            removed[key] = _AFTER_THE_SWAP
        elif built_later:
            removed[key] = _AFTER_THE_COPY
    schemas = {(i.table_schema, i.table, i.name): i.schema for i in inventory.carried_indexes}
    for schema, table, name, _ in plan.rewritten.indexes:
        key = f"index {qualify(schemas.get((schema, table, name), schema), name)}"
        changes[key] = {"method", "operator classes", "keys", "predicate"}
        if built_later:
            removed[key] = _AFTER_THE_COPY
    for build in plan.carried_concurrent:
        removed[f"index {qualify(build.schema, build.name)}"] = _AFTER_THE_SWAP
    for index in inventory.carried_indexes:
        if index.definition in plan.dropped_indexes:
            removed[f"index {qualify(index.schema, index.name)}"] = "dropped by request (indexes.unmappable: Drop)"
    return changes, removed


def _rewritten_changes(plan: MigrationPlan, inventory: SourceInventory) -> dict[str, set[str]]:
    """The constraints, defaults, views and functions the plan makes again from definitions rewritten for the target."""
    changes: dict[str, set[str]] = {}
    for schema, table, name, _ in plan.rewritten.checks:
        changes[f"constraint {qualify(schema, table)}.{quote_ident(name)}"] = {"definition"}
    for schema, table, name, _ in plan.rewritten.defaults:
        changes[f"column {qualify(schema, table)}.{quote_ident(name)}"] = {"default"}
    for schema, view, _ in plan.rewritten.views:
        changes[f"relation {qualify(schema, view)}"] = {"definition"}
    for function in inventory.functions:
        changes[f"function {qualify(function.schema, function.name)}"] = {"arguments", SOURCE_NAMES}
    return changes


def _carried_settings(plan: MigrationPlan) -> dict[str, str]:
    """The settings the plan writes for the target (ALTER DATABASE/ROLE … SET), as the reading names them."""
    added = {}
    for carried in plan.settings:
        if carried.statement is None or carried.target_name is None:
            continue
        saved = carried.saved
        role = saved.role or "(every role)"
        scope = "this database" if saved.database_scoped or not saved.role else "every database"
        added[f"setting {carried.target_name} of {role} in {scope}"] = "the source's setting, carried"
    return added


async def catalog_before(conn: asyncpg.Connection, progress: Progress) -> CatalogState:
    """The catalog as the change's transaction begins, before any of its statements (the time counts in progress).

    Read before the locks, it costs the write-blocking window nothing; a change another session
    commits before the locks are granted is told from a loss after the fact (changed_by_others).
    """
    progress.step, started = TransactionStep.CATALOG_BEFORE, time.perf_counter()
    try:
        return await read_catalog(conn)
    finally:
        progress.catalog_before_seconds += time.perf_counter() - started


async def catalog_after(conn: asyncpg.Connection, before: CatalogState, expected: Expected, progress: Progress) -> None:
    """Read the catalog again and compare it with ``before``: CatalogLoss on anything the plan does not make.

    The comparison is in progress.catalog, and its time in progress.catalog_seconds.
    """
    progress.step, started = TransactionStep.CATALOG_AFTER, time.perf_counter()
    try:
        comparison = compare(before, await read_catalog(conn), expected)
    finally:
        progress.catalog_seconds += time.perf_counter() - started
    if comparison.differences:
        raise CatalogLoss(comparison, before)
    progress.catalog = comparison
