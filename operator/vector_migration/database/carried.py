"""Indexes and CHECK constraints that use the source's objects beyond a plain vector column.

pgvector's own README indexes expressions (``(embedding::halfvec(n)) halfvec_l2_ops``,
``(binary_quantize(embedding)::bit(n)) bit_hamming_ops``), and gives PostgreSQL's built-in ``bit``
type operator classes of its own; applications check dimensions with ``vector_dims()``. These are
read here with what the planner needs to rewrite them for the target (each key's operator class,
and the source's function names); the planner decides whether the target can take them.
"""

from __future__ import annotations

import asyncpg

from .catalog import EXTENSION_MEMBERS, CarriedIndex, KeyOpclass, ReferencingKey, SavedConstraint, SourceInventory


async def read_carried(conn: asyncpg.Connection, inv: SourceInventory, index_oids: list[int]) -> None:
    """The carried indexes, and the names of the source's functions their expressions may call.

    ``index_oids`` are the expressions or multi-key indexes on migrated columns; any index anywhere
    whose operator class belongs to the source (pgvector's classes for ``bit``) is one too.
    """
    inv.source_functions = await _source_function_names(conn, inv.source.oid)
    inv.callable_functions = await _callable_function_names(conn, inv.source.oid)
    rows = await conn.fetch(
        EXTENSION_MEMBERS
        + """
        SELECT i.indexrelid::bigint AS oid, ic.relname AS name, n.nspname AS schema,
               tn.nspname AS table_schema, t.relname AS table_name,
               pg_catalog.pg_get_userbyid(t.relowner) AS owner, am.amname,
               EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_catalog.pg_am'::pg_catalog.regclass
                          AND m.objid = am.oid) AS method_owned,
               pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
               pg_catalog.obj_description(i.indexrelid, 'pg_class') AS comment,
               c.conname
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
          JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
          JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
          JOIN pg_catalog.pg_am am ON am.oid = ic.relam
          LEFT JOIN pg_catalog.pg_constraint c ON c.conindid = i.indexrelid
         WHERE i.indexrelid = ANY($2::pg_catalog.oid[])
            OR (NOT t.relispartition AND EXISTS (
                  SELECT 1 FROM pg_catalog.unnest(i.indclass::pg_catalog.oid[]) AS k(opclass)
                    JOIN members m ON m.classid = 'pg_catalog.pg_opclass'::pg_catalog.regclass
                                  AND m.objid = k.opclass))
         ORDER BY n.nspname, ic.relname
        """,
        inv.source.oid,
        index_oids,
    )
    keys = await _key_opclasses(conn, inv, [row["oid"] for row in rows])
    known = {index.oid for index in inv.indexes}
    for row in rows:
        if row["oid"] in known or (row["oid"], 0) in inv.refused:
            continue
        inv.carried_indexes.append(
            CarriedIndex(
                oid=row["oid"],
                schema=row["schema"],
                name=row["name"],
                table_schema=row["table_schema"],
                table=row["table_name"],
                owner=row["owner"],
                method=row["amname"],
                method_owned_by_source=row["method_owned"],
                keys=keys.get(row["oid"], ()),
                definition=row["definition"],
                constraint=row["conname"],
                comment=row["comment"],
            )
        )


async def _source_function_names(conn: asyncpg.Connection, extension_oid: int) -> frozenset[str]:
    rows = await conn.fetch(
        EXTENSION_MEMBERS
        + """
        SELECT p.proname FROM members m JOIN pg_catalog.pg_proc p ON p.oid = m.objid
         WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
        """,
        extension_oid,
    )
    return frozenset(row["proname"] for row in rows)


# An operator's function an application also calls by name (langchain's PGVectorStore selects
# cosine_distance(embedding, $1)); the others behind an operator (vector_lt, vector_add) it does not.
DISTANCES_CALLED_BY_NAME = ("l2_distance", "cosine_distance", "inner_product", "l1_distance", "hamming_distance")


async def _callable_function_names(conn: asyncpg.Connection, extension_oid: int) -> frozenset[str]:
    """The source's functions and aggregates an application calls on its types by name (avg, vector_dims, …).

    Not the machinery behind a type, a cast, an operator or an index method: those are what the
    migration maps, not what a query names.
    """
    rows = await conn.fetch(
        EXTENSION_MEMBERS
        + """
        , owned_types AS (SELECT objid FROM members WHERE classid = 'pg_catalog.pg_type'::pg_catalog.regclass)
        SELECT DISTINCT p.proname FROM members m JOIN pg_catalog.pg_proc p ON p.oid = m.objid
         WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.prokind IN ('f', 'a')
           AND p.pronargs > 0 AND p.proargtypes[0] IN (SELECT objid FROM owned_types)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE p.oid IN (t.typinput, t.typoutput,
                           t.typreceive, t.typsend, t.typmodin, t.typmodout, t.typanalyze))
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_cast c WHERE c.castfunc = p.oid)
           AND (p.proname = ANY($2::text[])
                OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_operator o WHERE o.oprcode = p.oid))
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_amproc a WHERE a.amproc = p.oid)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_aggregate g
                            WHERE p.oid IN (g.aggtransfn, g.aggfinalfn, g.aggcombinefn))
        """,
        extension_oid,
        list(DISTANCES_CALLED_BY_NAME),
    )
    return frozenset(row["proname"] for row in rows)


async def _key_opclasses(
    conn: asyncpg.Connection, inv: SourceInventory, index_oids: list[int]
) -> dict[int, tuple[KeyOpclass, ...]]:
    rows = await conn.fetch(
        EXTENSION_MEMBERS
        + """
        SELECT i.indexrelid::bigint AS oid, k.position, oc.opcname, ocn.nspname AS opclass_schema,
               it.typname AS input_type,
               EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_catalog.pg_opclass'::pg_catalog.regclass
                          AND m.objid = oc.oid) AS owned,
               (SELECT o.oprname FROM pg_catalog.pg_amop ao
                  JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr
                 WHERE ao.amopfamily = oc.opcfamily AND ao.amoppurpose = 'o'
                 ORDER BY ao.amopstrategy LIMIT 1) AS ordering_operator
          FROM pg_catalog.pg_index i,
               pg_catalog.unnest(i.indclass::pg_catalog.oid[]) WITH ORDINALITY AS k(opclass, position)
          JOIN pg_catalog.pg_opclass oc ON oc.oid = k.opclass
          JOIN pg_catalog.pg_namespace ocn ON ocn.oid = oc.opcnamespace
          JOIN pg_catalog.pg_type it ON it.oid = oc.opcintype
         WHERE i.indexrelid = ANY($2::pg_catalog.oid[]) AND k.position <= i.indnkeyatts
         ORDER BY i.indexrelid, k.position
        """,
        inv.source.oid,
        index_oids,
    )
    found: dict[int, list[KeyOpclass]] = {}
    for row in rows:
        found.setdefault(row["oid"], []).append(
            KeyOpclass(row["opclass_schema"], row["opcname"], row["owned"], row["input_type"], row["ordering_operator"])
        )
    return {oid: tuple(keys) for oid, keys in found.items()}


async def read_constraints(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    """CHECK constraints that depend on the source extension's functions, types or operators."""
    rows = await conn.fetch(
        EXTENSION_MEMBERS
        + """
        SELECT DISTINCT con.oid::bigint AS oid, n.nspname, t.relname, con.conname,
               pg_catalog.pg_get_constraintdef(con.oid) AS definition,
               pg_catalog.pg_get_userbyid(t.relowner) AS owner
          FROM pg_catalog.pg_constraint con
          JOIN pg_catalog.pg_class t ON t.oid = con.conrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
          JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
                                     AND d.objid = con.oid
          JOIN members m ON m.classid = d.refclassid AND m.objid = d.refobjid
         WHERE con.contype = 'c' AND NOT t.relispartition AND con.conislocal
         ORDER BY n.nspname, t.relname, con.conname
        """,
        inv.source.oid,
    )
    inv.constraints = [
        SavedConstraint(row["oid"], row["nspname"], row["relname"], row["conname"], row["definition"], row["owner"])
        for row in rows
    ]


async def read_referencing_keys(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    """Other tables' foreign keys that reference a migrated table (Django's, to a model with a vector field)."""
    rows = await conn.fetch(
        """
        SELECT n.nspname, t.relname, f.conname, pg_catalog.pg_get_constraintdef(f.oid) AS definition,
               rn.nspname AS referenced_schema, r.relname AS referenced_table
          FROM pg_catalog.pg_constraint f
          JOIN pg_catalog.pg_class t ON t.oid = f.conrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
          JOIN pg_catalog.pg_class r ON r.oid = f.confrelid
          JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
         WHERE f.contype = 'f' AND f.confrelid = ANY($1::pg_catalog.oid[]) AND f.conrelid <> f.confrelid
         ORDER BY 1, 2, 3
        """,
        sorted({column.table_oid for column in inv.columns}),
    )
    inv.referencing_keys = [
        ReferencingKey(
            row["nspname"],
            row["relname"],
            row["conname"],
            row["definition"],
            (row["referenced_schema"], row["referenced_table"]),
        )
        for row in rows
    ]
