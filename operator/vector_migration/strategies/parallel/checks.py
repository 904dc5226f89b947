"""What keeps a table from moving through a shadow, each refusal with what to do about it."""

from __future__ import annotations

import asyncpg

from ...database.catalog import Blocker, SourceInventory
from ...database.sql import qualify
from ...database.surface import TargetSurface
from ...vocabulary import Reason
from .names import (
    INDEX_SUFFIX,
    OLD_SUFFIX,
    OURS,
    SHADOW_SUFFIX,
    derived_name,
)


async def check_tables(conn: asyncpg.Connection, inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
    """Every table's blockers at once."""
    blockers: list[Blocker] = []
    if surface.collides:
        blockers.append(
            Blocker(
                Reason.UNSUPPORTED_STRATEGY,
                f"strategy Parallel needs {surface.extension} installed beside {inventory.source.name}, but their "
                "names collide (access methods are unique per database); use InPlace",
            )
        )
    # A materialized view over a moving table moves too, with its indexes (dependents.move_materialized_view).
    moving = set(inventory.tables()) | {(v.schema, v.name) for v in inventory.views if v.materialized}
    blockers += [
        Blocker(
            Reason.UNMAPPED_INDEX,
            f"index {i.schema}.{i.name} ({i.definition}) uses {inventory.source.name}'s operator classes on table "
            f"{i.table_schema}.{i.table}, which has no vector column to move; drop it before migrating, or use InPlace",
        )
        for i in inventory.carried_indexes
        if (i.table_schema, i.table) not in moving
    ]
    for schema, table in inventory.tables():
        blockers += await _check_table(conn, schema, table)
    return blockers


# size: one catalog query, then one sentence per refusal
async def _check_table(conn: asyncpg.Connection, schema: str, table: str) -> list[Blocker]:
    name = f"{schema}.{table}"
    facts = await conn.fetchrow(
        """
        SELECT c.oid, c.relkind::text AS relkind, c.relforcerowsecurity, c.relispartition,
               EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
                   AS inherits,
               EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
                   AS has_primary_key
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2
        """,
        schema,
        table,
    )
    if facts is None:
        return []
    blockers = []
    problems = []
    if not facts["has_primary_key"]:
        problems.append("has no primary key (the sync trigger and the backfill find rows by it)")
    if facts["relkind"] == "p" or facts["relispartition"]:
        problems.append(
            "is partitioned (a shadow of the whole tree is not supported yet; InPlace, Rebuild and Replicate "
            "migrate partitioned tables)"
        )
    elif facts["inherits"]:
        problems.append("inherits or is inherited from (its shadow cannot take its place in the hierarchy)")
    if facts["relforcerowsecurity"]:
        problems.append("forces row-level security on its owner (the backfill, run as the owner, would miss rows)")
    if problems:
        blockers.append(
            Blocker(
                Reason.BLOCKING_DEPENDENT,
                f"table {name} cannot move through a shadow: it {'; it '.join(problems)}; use InPlace",
            )
        )
    blockers += await _index_names_free(conn, schema, table)
    for suffix in (SHADOW_SUFFIX, OLD_SUFFIX):
        derived = derived_name(table, suffix)
        taken = await conn.fetchval("SELECT pg_catalog.to_regclass($1) IS NOT NULL", qualify(schema, derived))
        if taken and not await ours(conn, schema, derived):
            blockers.append(
                Blocker(
                    Reason.BLOCKING_DEPENDENT,
                    f"table {name}: the name {schema}.{derived} the migration needs is taken; rename that table",
                )
            )
    return blockers


async def ours(conn: asyncpg.Connection, schema: str, table: str) -> bool:
    """Whether a table is one this engine made (its comment says so)."""
    comment = await conn.fetchval(
        "SELECT pg_catalog.obj_description($1::pg_catalog.regclass, 'pg_class')", qualify(schema, table)
    )
    return bool(comment and comment.startswith(OURS))


async def _index_names_free(conn: asyncpg.Connection, schema: str, table: str) -> list[Blocker]:
    """The names the shadow's indexes take until the finalize, and the originals' after it, must be free.

    Free, or already the shadow's own (a run that continues after its prepare).
    """
    shadow = qualify(schema, derived_name(table, SHADOW_SUFFIX))
    names = await conn.fetch(
        """
        SELECT c.relname AS index, COALESCE(k.conname, c.relname) AS constraint_or_index
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
          LEFT JOIN pg_catalog.pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                AND k.contype IN ('p', 'u', 'x')
         WHERE i.indrelid = $1::pg_catalog.regclass
        """,
        qualify(schema, table),
    )
    wanted = [derived_name(r["constraint_or_index"], INDEX_SUFFIX) for r in names]
    wanted += [derived_name(r["index"], OLD_SUFFIX) for r in names]
    taken = await conn.fetch(
        """
        SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
         WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
           AND i.indrelid IS DISTINCT FROM pg_catalog.to_regclass($3)
         ORDER BY 1
        """,
        schema,
        wanted,
        shadow,
    )
    return [
        Blocker(
            Reason.BLOCKING_DEPENDENT,
            f"table {schema}.{table}: the name {schema}.{row['relname']} the migration needs for an index is taken; "
            "rename that relation",
        )
        for row in taken
    ]
