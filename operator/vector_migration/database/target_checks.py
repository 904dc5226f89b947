"""What the target computes, measured rather than read from its catalog: its operators and its indexes.

A catalog says an extension has ``<#>`` and an HNSW access method, never that they answer as
pgvector's do. The real RuVector 2.0.6 answers otherwise in three ways (docs/ruvector-findings.md):
its ``<#>`` is the inner product where pgvector's is its negative; with its HNSW index on a table,
``SELECT count(*)`` of the whole table answers 0 whenever the planner reads it through the index;
and its ``ruivfflat`` returns a few rows of its own choosing whatever the query asks. Each is
measured in the probe, on values of these checks' own, inside a transaction (or savepoint) that
is always rolled back: nothing is left in the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import asyncpg

from .sql import quote_ident
from .target_objects import TargetOpclass, TargetType

FINDINGS = "docs/ruvector-findings.md"

# What pgvector's distance operators compute for two fixed vectors: what an application that orders
# by one or reads its value relies on. The target's operators of the same names are measured on the
# same pair.
OPERATOR_PROBE = ("[1,2,3]", "[4,5,6]")
PGVECTOR_OPERATOR_VALUES = {
    "<->": math.sqrt(27.0),
    "<#>": -32.0,
    "<=>": 1.0 - 32.0 / math.sqrt(14.0 * 77.0),
    "<+>": 9.0,
}

# An index's check: this many rows, this many nearest asked for, and this many of them it must find.
# IVFFlat is built with one list, so its search is exhaustive and must be exact; HNSW on so few rows
# with its default ef_search (40 in pgvector and RuVector) finds them all in practice, so one miss
# is allowed for ties.
CHECK_ROWS = 200
CHECK_NEAREST = 20
CHECK_FOUND_AT_LEAST = 18


async def operators_otherwise(
    conn: asyncpg.Connection, extension: str, version: str, dense: TargetType | None
) -> tuple[tuple[str, str], ...]:
    """Each distance operator of the target's dense type that computes otherwise than pgvector's, measured."""
    if dense is None:
        return ()
    type_sql = f"{quote_ident(dense.schema)}.{quote_ident(dense.name)}"
    otherwise = []
    for operator, expected in PGVECTOR_OPERATOR_VALUES.items():
        try:
            async with conn.transaction():  # a savepoint: the probe's transaction survives an operator it lacks
                value = await conn.fetchval(
                    f"SELECT ($1::pg_catalog.text::{type_sql} OPERATOR({quote_ident(dense.schema)}.{operator}) "
                    f"$2::pg_catalog.text::{type_sql})::pg_catalog.float8",
                    *OPERATOR_PROBE,
                )
        except asyncpg.PostgresError:
            continue  # no such operator: an index ordering by it finds no operator class
        if value is None or not math.isclose(value, expected, rel_tol=1e-4, abs_tol=1e-6):
            left, right = OPERATOR_PROBE
            measured = "NULL" if value is None else f"{value:g}"
            how = f"'{left}' {operator} '{right}' is {measured} in {extension} {version} and {expected:g} in pgvector"
            otherwise.append((operator, how))
    return tuple(otherwise)


async def methods_failing(
    conn: asyncpg.Connection,
    extension: str,
    version: str,
    dense: TargetType | None,
    opclasses: tuple[TargetOpclass, ...],
    search_width: Mapping[str, str],
) -> tuple[tuple[str, str], ...]:
    """Each access method whose index, on a table of this check's own, answers otherwise than an exact search."""
    if dense is None:
        return ()
    failing = []
    for opclass in opclasses:
        if opclass.input_type != dense.name or opclass.ordering_operator != "<->":
            continue  # L2 on the dense type: the one operator every vector index serves
        answered = await _index_answers(conn, dense, opclass, search_width)
        if answered is not None:
            failing.append((opclass.method, f"{answered}, in {extension} {version}"))
    return tuple(failing)


async def _search_widely(conn: asyncpg.Connection, width: Mapping[str, str]) -> None:
    """Set the search width of pgvector and RuVector wide (``width``: setting -> value), for the check alone.

    A session's own (ALTER ROLE … SET hnsw.ef_search = 1) must not fail a healthy index, nor block
    a rollback.
    """
    present = await conn.fetch("SELECT name FROM pg_catalog.pg_settings WHERE name = ANY($1::text[])", list(width))
    for (name,) in present:
        await conn.execute("SELECT pg_catalog.set_config($1, $2, true)", name, width[name])


# size: one scenario read top to bottom: a table, its exact answer, an index, the index's answer
async def _index_answers(
    conn: asyncpg.Connection, dense: TargetType, opclass: TargetOpclass, search_width: Mapping[str, str]
) -> str | None:
    """What the method's index answered when it answered wrongly; None when right, or when not measured."""
    type_sql = f"{quote_ident(dense.schema)}.{quote_ident(dense.name)}"
    distance = f"OPERATOR({quote_ident(dense.schema)}.<->)"
    query = (
        f"SELECT id FROM pg_temp.vmig_index_check ORDER BY e {distance} '[1,0,0]'::pg_catalog.text::{type_sql} "
        f"LIMIT {CHECK_NEAREST}"
    )
    options = " WITH (lists = 1)" if opclass.method.endswith("ivfflat") else ""
    transaction = conn.transaction()
    await transaction.start()
    try:
        column_type = f"{type_sql}(3)" if dense.has_typmod else type_sql  # pgvector indexes need dimensions
        await conn.execute(f"CREATE TEMPORARY TABLE pg_temp.vmig_index_check (id integer, e {column_type})")
        await conn.execute(
            "INSERT INTO pg_temp.vmig_index_check SELECT i, ('[' || cos(i)::real || ',' || sin(i)::real || ',' "
            f"|| (i % 7)::real / 7 || ']')::pg_catalog.text::{type_sql} "
            f"FROM pg_catalog.generate_series(1, {CHECK_ROWS}) i"
        )
        exact = [row["id"] for row in await conn.fetch(query)]
        await conn.execute(
            f"CREATE INDEX vmig_index_check_e ON pg_temp.vmig_index_check USING {quote_ident(opclass.method)} "
            f"(e {quote_ident(opclass.schema)}.{quote_ident(opclass.name)}){options}"
        )
        await conn.execute("SET LOCAL enable_seqscan = off")
        await _search_widely(conn, search_width)
        # A read of the whole table must find every row whatever the planner picks: RuVector's HNSW
        # offers itself for it (amgetbitmap, amcanreturn) and returns nothing without an ORDER BY.
        counted = await conn.fetchval("SELECT pg_catalog.count(*) FROM pg_temp.vmig_index_check")
        if counted != CHECK_ROWS:
            return (
                f"SELECT count(*) of a table of {CHECK_ROWS} rows answered {counted} with its index present: "
                "the planner reads a whole table through the index, which returns no rows without ORDER BY"
            )
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {query}"))
        if "vmig_index_check_e" not in plan:
            return None  # the planner would not use it: nothing measured, nothing claimed
        indexed = [row["id"] for row in await conn.fetch(query)]
    except asyncpg.PostgresError:
        return None  # not measured: an index the target cannot build fails in the swap, naming itself
    finally:
        await transaction.rollback()
    found = len(set(indexed) & set(exact))
    if found >= CHECK_FOUND_AT_LEAST:
        return None
    return (
        f"asked for the {CHECK_NEAREST} nearest of {CHECK_ROWS} rows, its index returned {len(indexed)} rows "
        f"with {found} of them"
    )
