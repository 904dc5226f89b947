"""RuVector-only features applied after a verified migration (collections, tiers, integrity)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from ..database.sql import (
    qualify,
)
from ..database.surface import method_kind
from ..engine.context import Migration
from ..engine.probe import Probe

METRICS = {"<->": "l2", "<=>": "cosine", "<#>": "ip", "<+>": "l1"}


# size: optional calls per collection, each guarded by its own warning
async def apply_post_migration(m: Migration) -> None:
    """RuVector-only features, applied only when the target extension owns their functions.

    Optional by nature: a missing function or a failing call is a warning, never a failure of a
    migration whose data is already verified.
    """
    post = m.spec.post_migration
    wanted: list[str] = []
    if post.register_collections or post.tiers is not None or post.integrity_policy is not None:
        wanted.append("ruvector_register_collection")
    if post.tiers is not None:
        wanted.append("ruvector_set_tiers")
    if post.integrity_policy is not None:
        wanted.append("ruvector_integrity_policy_set")
    if not wanted:
        return
    functions = await _extension_functions(m, wanted)
    for name in wanted:
        if name not in functions:
            m.warn(f"postMigration: target {m.spec.target.extension} has no {name}(); skipped")
    if "ruvector_register_collection" not in functions:
        return
    dims = {
        (table.name, column.name): column.dims
        for table in (m.status.inventory.tables if m.status.inventory else [])
        for column in table.columns
    }
    # One collection per column; its metric comes from the index RuVector's search would use:
    # a whole-table HNSW index first, then any other, by name.
    methods = {r.name: r.method for r in m.facts.rebuilds}

    def preference(probe: Probe) -> tuple[bool, bool, str]:
        kind = method_kind(methods.get(probe.index, ""))
        return probe.after.predicate is not None, kind != "hnsw", probe.index

    seen: set[tuple[str, str, str]] = set()
    for probe in sorted(m.facts.probes, key=preference):
        key = (probe.after.schema, probe.after.table, probe.after.column)
        if key in seen:
            continue
        seen.add(key)
        collection = f"{probe.after.table}_{probe.after.column}"[:63]
        calls: list[tuple[str, str, tuple[Any, ...]]] = [
            (
                "ruvector_register_collection",
                "$1, $2, $3, $4, $5, $6",
                (
                    collection,
                    probe.after.schema,
                    probe.after.table,
                    probe.after.column,
                    dims.get((f"{probe.after.schema}.{probe.after.table}", probe.after.column)),
                    METRICS.get(probe.after.operator, "l2"),
                ),
            )
        ]
        if post.tiers is not None and "ruvector_set_tiers" in functions:
            tiers = post.tiers
            calls.append(("ruvector_set_tiers", "$1, $2, $3, $4", (collection, *_tier_hours(tiers))))
        if post.integrity_policy is not None and "ruvector_integrity_policy_set" in functions:
            policy = json.dumps(post.integrity_policy)
            calls.append(
                ("ruvector_integrity_policy_set", "$1, $2, $3::pg_catalog.jsonb", (collection, "default", policy))
            )
        for function, placeholders, arguments in calls:
            try:
                async with m.session.transaction():
                    await m.session.execute(f"SELECT {functions[function]}({placeholders})", *arguments)
            except asyncpg.PostgresError as error:
                m.warn(f"postMigration: {function}({collection}) failed: {error}")


def _tier_hours(tiers: Any) -> tuple[int, int, int]:
    return tiers.hot_hours, tiers.warm_hours, tiers.cold_hours


async def _extension_functions(m: Migration, wanted: list[str]) -> dict[str, str]:
    """The functions of the target extension among ``wanted``, qualified, by name."""
    rows = await m.session.fetch(
        """
        SELECT p.proname, n.nspname FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND d.deptype = 'e'
         WHERE e.extname = $1 AND p.proname = ANY($2::text[])
        """,
        m.spec.target.extension,
        wanted,
    )
    return {row["proname"]: qualify(row["nspname"], row["proname"]) for row in rows}
