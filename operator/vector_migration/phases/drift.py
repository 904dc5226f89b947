"""Drift: how the database differs from what a succeeded migration left. A read; it changes nothing.

Clients undo migrations without meaning to: langchain-postgres and LlamaIndex run ``CREATE
EXTENSION IF NOT EXISTS vector`` at start-up, a restore from an old dump brings pgvector's columns
back, an index build fails and leaves an INVALID index. A finished migration run again, ``vector-
migration check`` and the operator's periodic check all read the catalog through here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..database.catalog import read_extension
from ..database.sql import connect, qualify, set_timeouts
from ..engine import records
from ..engine.context import Migration, close_session
from ..engine.strategy import leftovers_due_in, strategy_of
from ..status import adopt


@dataclass(frozen=True)
class DriftCheck:
    """What a check found: whether the journal says the migration succeeded, and what differs."""

    migrated: bool
    differences: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """One sentence for a person, with what to do."""
        if not self.migrated:
            return "the journal has no verified record of this migration: it has not succeeded in this database"
        if not self.differences:
            return "the database still matches what the migration left"
        return (
            f"the journal says this migration succeeded, but the database no longer matches: "
            f"{'; '.join(self.differences)}. Nothing was changed. To migrate it again, apply a migration "
            "under a new name."
        )


async def check_once(m: Migration) -> DriftCheck:
    """One check on a connection of its own, bounded by the spec's timeouts: a read, so no migration lock."""
    m.conn = await connect(m.params)
    try:
        await set_timeouts(m.conn, m.spec.lock_timeout, m.spec.statement_timeout, local=False)
        return await check_drift(m)
    finally:
        await close_session(m)


async def check_drift(m: Migration) -> DriftCheck:
    """Read the journal and, for a succeeded migration, compare the catalog with what it left."""
    recorded = await records.read(m.session, m.name)
    if recorded.verified is None:
        return DriftCheck(migrated=False)
    adopt(m.status, recorded.verified.status)
    move = strategy_of(m.spec).database_move
    elsewhere = move.migrated_database(m, recorded) if move is not None else None
    if elsewhere is None:
        return DriftCheck(True, tuple(await drift_from(m, recorded.first_change)))
    there = dataclasses.replace(m, conn=await connect(elsewhere))  # Replicate's new database on another server
    try:
        await set_timeouts(there.session, m.spec.lock_timeout, m.spec.statement_timeout, local=False)
        return DriftCheck(True, tuple(await drift_from(there, recorded.first_change)))
    finally:
        await close_session(there)


async def drift_from(m: Migration, record: records.SwapRecord | None) -> list[str]:
    """How the catalog differs from what a succeeded migration left.

    The target gone, the source installed again (with the columns of its types, if any), a
    migrated column gone or of the source's type again, a migrated table's index INVALID.
    """
    conn = m.session
    target = m.spec.target.extension
    differences = []
    if await read_extension(conn, target) is None:
        differences.append(f"extension {target} is not installed")
    source = m.spec.source.extension
    keeps_source = leftovers_due_in(strategy_of(m.spec), m.status) is not None  # Parallel's old tables use it
    if not keeps_source and await read_extension(conn, source) is not None:
        differences.append(
            f"extension {source} is installed again (a client's CREATE EXTENSION IF NOT EXISTS {source} at start-up?)"
        )
    tables = record.tables if record is not None else []
    for schema, table, columns in tables:
        for column in columns:
            differences += await _column_drift(m, schema, table, column)
    invalid = await conn.fetch(
        """
        SELECT n.nspname, c.relname FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT i.indisvalid AND i.indrelid = ANY(
               SELECT pg_catalog.to_regclass(t) FROM pg_catalog.unnest($1::pg_catalog.text[]) AS t)
         ORDER BY 1, 2
        """,
        [qualify(schema, table) for schema, table, _ in tables],
    )
    differences += [f"index {row['nspname']}.{row['relname']} is INVALID" for row in invalid]
    return differences


async def _column_drift(m: Migration, schema: str, table: str, column: str) -> list[str]:
    row = await m.session.fetchrow(
        """
        SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, e.extname
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                AND d.objid = (CASE WHEN t.typelem <> 0 AND t.typcategory = 'A' THEN t.typelem ELSE t.oid END)
                AND d.deptype = 'e'
          LEFT JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
         WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped
        """,
        qualify(schema, table),
        column,
    )
    if row is None:
        return [f"column {schema}.{table}.{column} is gone"]
    if row["extname"] == m.spec.source.extension:
        return [f"column {schema}.{table}.{column} is {row['type']} ({row['extname']}) again"]
    return []
