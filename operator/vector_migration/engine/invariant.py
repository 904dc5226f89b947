"""The catalog invariant: what a conversion plan changes, and the check that it changed nothing else.

``expected_of`` reads the plan as data: the columns it converts (their types), the indexes it
rebuilds or carries (access method, operator classes, and what it rewrites), the constraints,
defaults, views and functions it rewrites, the settings it carries, the extensions it swaps. The
strategy reads the catalog before its change and again before the change commits
(:func:`check_catalog`); any other difference raises :class:`CatalogLoss`, and the strategy's
transaction rolls back with nothing changed.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from ..database.catalog import SourceInventory
from ..database.catalog_state import CatalogState, Comparison, Expected, compare, read_catalog
from ..database.sql import qualify, quote_ident
from .plan import MigrationPlan

# How many differences a message names before it counts the rest.
SHOWN_DIFFERENCES = 5


class CatalogLoss(Exception):
    """The change would leave the catalog other than its plan says: it must not commit."""

    def __init__(self, comparison: Comparison) -> None:
        shown = "; ".join(str(d) for d in comparison.differences[:SHOWN_DIFFERENCES])
        more = len(comparison.differences) - SHOWN_DIFFERENCES
        super().__init__(
            f"{len(comparison.differences)} catalog difference(s) the plan does not make: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
        self.comparison = comparison


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
) -> Expected:
    """Everything the conversion plan changes, as the catalog reading will show it.

    ``drops_source``: the plan drops the source extension (InPlace and Rebuild; Parallel keeps it
    for the old tables). ``own`` are relations the migration made for itself, quoted and qualified.
    """
    types: dict[str, str] = {}
    for conversion in plan.conversions:
        column = conversion.column
        before = type_ref(column.type_schema, column.type_name)
        after = type_ref(conversion.target_type.schema, conversion.target_type.name)
        types.setdefault(before, after)
        types.setdefault(
            type_ref(column.type_schema, "_" + column.type_name),
            type_ref(conversion.target_type.schema, "_" + conversion.target_type.name),
        )
    column_types = {
        f"column {qualify(c.column.schema, c.column.table)}.{quote_ident(c.column.column)}": type_ref(
            c.target_type.schema, ("_" if c.column.array else "") + c.target_type.name
        )
        for c in plan.conversions
    }
    changes: dict[str, set[str]] = {}
    added: dict[str, str] = {}
    removed: dict[str, str] = {}

    def change(key: str, *attributes: str) -> None:
        changes.setdefault(key, set()).update(attributes)

    for rebuild in plan.rebuilds:
        key = f"index {qualify(rebuild.saved.schema, rebuild.saved.name)}"
        change(key, "method", "operator classes", "options", "predicate")
        if rebuild.concurrent:
            removed[key] = "built after the swap commits (reindex.mode: Concurrent)"
    for schema, table, name, _ in plan.rewritten.indexes:
        index_schema = next((i.schema for i in inventory.carried_indexes if (i.table_schema, i.table, i.name) ==
                             (schema, table, name)), schema)  # fmt: skip
        change(f"index {qualify(index_schema, name)}", "method", "operator classes", "keys", "predicate")
    for build in plan.carried_concurrent:
        removed[f"index {qualify(build.schema, build.name)}"] = (
            "built after the swap commits (reindex.mode: Concurrent)"
        )
    for index in inventory.carried_indexes:
        if index.definition in plan.dropped_indexes:
            removed[f"index {qualify(index.schema, index.name)}"] = "dropped by request (indexes.unmappable: Drop)"
    for schema, table, name, _ in plan.rewritten.checks:
        change(f"constraint {qualify(schema, table)}.{quote_ident(name)}", "definition")
    for schema, table, name, _ in plan.rewritten.defaults:
        change(f"column {qualify(schema, table)}.{quote_ident(name)}", "default")
    for schema, view, _ in plan.rewritten.views:
        change(f"relation {qualify(schema, view)}", "definition")
    for function in inventory.functions:
        change(f"function {qualify(function.schema, function.name)}", "arguments", "source")
    for carried in plan.settings:
        if carried.statement is None or carried.target_name is None:
            continue
        saved = carried.saved
        role = saved.role or "(every role)"
        scope = "this database" if saved.database_scoped or not saved.role else "every database"
        added[f"setting {carried.target_name} of {role} in {scope}"] = "the source's setting, carried"
    added[f"extension {quote_ident(target_extension)}"] = "the target extension"
    if drops_source:
        removed[f"extension {quote_ident(inventory.source.name)}"] = "the source extension, replaced"
    added[f"schema {quote_ident(target_schema)}"] = "the target extension's schema"
    return Expected(
        types=types,
        column_types=column_types,
        changes={key: frozenset(names) for key, names in changes.items()},
        added=added,
        removed=removed,
        own=frozenset(own),
    )


async def check_catalog(conn: asyncpg.Connection, before: CatalogState, expected: Expected) -> Comparison:
    """Read the catalog again and compare it with ``before``: CatalogLoss on anything the plan does not make."""
    comparison = compare(before, await read_catalog(conn), expected)
    if comparison.differences:
        raise CatalogLoss(comparison)
    return comparison
