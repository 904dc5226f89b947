"""What else moves with a Parallel table: the keys, views, materialized views and triggers that name it.

A foreign key, a view and a trigger reference a table, not a name: after the finalize's renames
they would stay with the old table. Each is made again for the table that then has the name (and
given back by a rollback after the finalize). A materialized view stays with the old table, which
is kept in sync, until the old tables go; then it is made again over the migrated one.
"""

from __future__ import annotations

import dataclasses

from ...database.catalog import SavedView
from ...database.sql import qualify, quote_ident
from ...engine.plan import PlanningError, Rewritten, Statement
from ...engine.views import recreate_view
from ...vocabulary import Reason, StatementKind
from .facts import TableFacts
from .names import REPLACEMENT_SUFFIX, derived_name
from .recorded import ShadowTable


def views_over(tables: list[TableFacts]) -> list[SavedView]:
    """The views over every moving table, each once, in creation order; those Parallel cannot move refused."""
    by_oid: dict[int, SavedView] = {}
    for facts in tables:
        for view in facts.views:
            if view.oid not in by_oid or by_oid[view.oid].depth < view.depth:
                by_oid[view.oid] = view
    views = sorted(by_oid.values(), key=lambda v: (v.depth, v.schema, v.name))
    refusals = [
        f"view {reader} reads materialized view {materialized}, which moves after the finalize"
        for facts in tables
        for reader, materialized in facts.materialized_readers
    ]
    for view in views:
        name = f"{view.schema}.{view.name}"
        if view.materialized and view.depth > 0:
            # It reads a view the finalize drops and creates again, which its dependency forbids.
            refusals.append(f"materialized view {name} reads a view over a moving table")
    if refusals:
        raise PlanningError(
            Reason.BLOCKING_DEPENDENT,
            "; ".join(refusals) + ": strategy Parallel does not carry these across yet (InPlace and Rebuild do)",
        )
    return views


def view_queries(rewritten: Rewritten) -> dict[tuple[str, str], str]:
    """(schema, view) -> its query for the target, for the views that name the source's types or functions."""
    return {(schema, name): query for schema, name, query in rewritten.views}


def move_materialized_view(view: SavedView, rewritten: Rewritten) -> list[Statement]:
    """After keepOldFor, before the old table goes: a materialized view made again over the migrated table.

    Until then it reads the old table, which the reverse sync keeps equal, so its queries and a
    REFRESH go on working and the finalize holds no lock to fill it. Its replacement is filled and
    indexed (the vector indexes rewritten for the target, as InPlace's are) under a derived name
    while the old one still serves; only the drop and the renames make its readers wait.
    """
    # Imported here: the parser costs the operator ~4 MB of memory (bench/), needed only for these.
    from ...engine.rewrite import index_name, retarget_index

    schema, replacement = view.schema, derived_name(view.name, REPLACEMENT_SUFFIX)
    query = view_queries(rewritten).get((schema, view.name))
    statements = recreate_view(dataclasses.replace(view, name=replacement, index_definitions=()), query=query)
    mine = {name: d for s, t, name, d in rewritten.indexes if (s, t) == (schema, view.name)}
    dropped = {name for s, t, name, _ in rewritten.dropped if (s, t) == (schema, view.name)}
    renames = []
    for definition in view.index_definitions:
        name = index_name(definition)
        if name in dropped:  # indexes.unmappable: Drop; the plan's warnings name it
            continue
        built = derived_name(name, REPLACEMENT_SUFFIX)
        target = mine.get(name, definition)
        # An index's expressions and predicate are the owner's code: built as the owner
        statements.append(Statement(StatementKind.RECREATE_DEPENDENT, retarget_index(target, replacement, built),
                                    run_as=view.owner))  # fmt: skip
        renames.append(f"ALTER INDEX {qualify(schema, built)} RENAME TO {quote_ident(name)}")
    statements.append(
        Statement(StatementKind.DROP_DEPENDENT, f"DROP MATERIALIZED VIEW {qualify(schema, view.name)} RESTRICT")
    )
    renames.insert(0, f"ALTER MATERIALIZED VIEW {qualify(schema, replacement)} RENAME TO {quote_ident(view.name)}")
    return statements + [Statement(StatementKind.RECREATE_DEPENDENT, sql) for sql in renames]


# ALTER TABLE … <state> TRIGGER, by pg_trigger.tgenabled: origin, disabled, replica, always
TRIGGER_STATES = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


def move_triggers(table: ShadowTable) -> list[str]:
    """The table's own triggers made on the migrated table (its name now), and disabled on the old one.

    They fire for the application's writes to the migrated table; the reverse mirror's writes to the
    old table must not fire them a second time (an audit row twice, a notification twice).
    """
    schema = table.table_schema
    source, old = qualify(schema, table.table), qualify(schema, table.old)
    sql = []
    for trigger in table.triggers:
        sql.append(trigger.definition)  # pg_get_triggerdef names the table, which is now the migrated one
        name = quote_ident(trigger.name)
        if trigger.enabled != "O":
            sql.append(f"ALTER TABLE {source} {TRIGGER_STATES[trigger.enabled]} TRIGGER {name}")
        sql.append(f"ALTER TABLE {old} DISABLE TRIGGER {name}")
    return sql


def repoint_keys(table: ShadowTable, *, validated: bool = False) -> list[Statement]:
    """Other tables' foreign keys to the table, made again so they reference what now has its name.

    A foreign key references a table, not a name: after the renames it would still point at the old
    table. At the finalize it is made again NOT VALID (no scan while writes wait) and validated
    right after the commit; a rollback makes it again as it was, validated (the tables are equal).
    """
    statements = []
    for key in table.referencing_keys:
        relation, name = qualify(key.table_schema, key.table), quote_ident(key.name)
        statements += [
            Statement(StatementKind.SWAP_NAMES, f"ALTER TABLE {relation} DROP CONSTRAINT {name}"),
            Statement(
                StatementKind.SWAP_NAMES,
                f"ALTER TABLE {relation} ADD CONSTRAINT {name} {key.definition}" + ("" if validated else " NOT VALID"),
            ),
        ]
    return statements


def validate_keys(tables: list[ShadowTable]) -> list[Statement]:
    """After the finalize's commit: the re-pointed keys checked against every row (writes go on)."""
    return [
        Statement(
            StatementKind.VALIDATE_FOREIGN_KEY,
            f"ALTER TABLE {qualify(key.table_schema, key.table)} VALIDATE CONSTRAINT {quote_ident(key.name)}",
        )
        for table in tables
        for key in table.referencing_keys
    ]
