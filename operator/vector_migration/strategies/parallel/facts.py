"""What Parallel's plan is derived from: each table's key, columns, indexes, constraints, grants, sequences.

Read from the catalog at the checklist and again inside the transaction that creates the shadows
(where a difference means the database changed under the approved plan). Nothing here changes
the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from ...database.catalog import SavedView
from ...database.inventory import read_view_tree
from ...database.sql import qualify
from .extras import read_extras
from .names import SYNC_TRIGGER, SYNC_TRUNCATE_TRIGGER
from .recorded import TableExtras


@dataclass(frozen=True)
class IndexFacts:
    """One index of the original table."""

    name: str
    definition: str  # pg_get_indexdef
    on_vector: bool  # it reads a vector column: rebuilt on the target's methods (or not at all)
    constraint: str | None  # the constraint it backs (primary key, unique, exclusion), if any
    constraint_definition: str | None  # pg_get_constraintdef of that constraint


@dataclass(frozen=True)
class TableFacts:
    """One table as the shadow must copy it."""

    schema: str
    table: str
    owner: str
    key: tuple[tuple[str, str], ...]  # (column, type) of the primary key, in key order
    columns: tuple[str, ...]  # insertable (not generated) columns, in order
    indexes: tuple[IndexFacts, ...]  # in creation order
    foreign_keys: tuple[tuple[str, str], ...]  # (name, definition) of the foreign keys it holds
    grants: tuple[tuple[str, str, bool], ...]  # (grantee, privilege, grantable)
    sequences: tuple[tuple[str, str], ...]  # (column, owned sequence) of serial columns
    identities: tuple[tuple[str, str], ...]  # (column, identity sequence)
    comment: str | None  # the table's own comment
    # (schema, table, name, definition) of other tables' foreign keys to it: re-pointed at the finalize
    referencing: tuple[tuple[str, str, str, str], ...] = ()
    row_security: bool = False  # ENABLE ROW LEVEL SECURITY (FORCE is refused by the checks)
    # (name, pg_get_triggerdef, tgenabled) of the table's own triggers (not the engine's sync triggers)
    triggers: tuple[tuple[str, str, str], ...] = ()
    views: tuple[SavedView, ...] = ()  # views over the table, and views over those, in creation order
    # (view, materialized view), qualified: views reading a materialized view over the table
    materialized_readers: tuple[tuple[str, str], ...] = ()
    # (name, PERMISSIVE|RESTRICTIVE, command, roles, USING expression, WITH CHECK expression)
    policies: tuple[tuple[str, str, str, tuple[str, ...], str | None, str | None], ...] = ()
    # each identity sequence: (column, sequence as regclass text, its name, its grants (grantee, privilege, grantable))
    identity_sequences: tuple[tuple[str, str, str, tuple[tuple[str, str, bool], ...]], ...] = ()
    # (column, grantee, privilege, grantable) of the privileges granted on single columns (pg_attribute.attacl)
    column_grants: tuple[tuple[str, str, str, bool], ...] = ()
    extras: TableExtras = field(default_factory=TableExtras)  # what LIKE does not copy (extras.py)


# size: ten short catalog queries: one place reads everything a shadow copies
async def read_table_facts(conn: asyncpg.Connection, schema: str, table: str, vector_columns: list[str]) -> TableFacts:
    """The facts of one table (it exists: the inventory found it)."""
    relation = qualify(schema, table)
    key = await conn.fetch(
        """
        SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = $1::pg_catalog.regclass AND i.indisprimary
         ORDER BY pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum)
        """,
        relation,
    )
    columns = await conn.fetch(
        """
        SELECT attname FROM pg_catalog.pg_attribute
         WHERE attrelid = $1::pg_catalog.regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
         ORDER BY attnum
        """,
        relation,
    )
    indexes = await conn.fetch(
        """
        SELECT c.relname, pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
               EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute a
                         ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = i.indexrelid
                          AND d.refobjid = i.indrelid AND a.attname = ANY($2::text[])) AS on_vector,
               k.conname, pg_catalog.pg_get_constraintdef(k.oid) AS constraint_definition
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
          LEFT JOIN pg_catalog.pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                AND k.contype IN ('p', 'u', 'x')
         WHERE i.indrelid = $1::pg_catalog.regclass ORDER BY c.oid
        """,
        relation,
        vector_columns,
    )
    foreign_keys = await conn.fetch(
        """
        SELECT conname, pg_catalog.pg_get_constraintdef(oid) AS definition FROM pg_catalog.pg_constraint
         WHERE conrelid = $1::pg_catalog.regclass AND contype = 'f' ORDER BY conname
        """,
        relation,
    )
    referencing = await conn.fetch(
        """
        SELECT n.nspname, t.relname, f.conname, pg_catalog.pg_get_constraintdef(f.oid) AS definition
          FROM pg_catalog.pg_constraint f
          JOIN pg_catalog.pg_class t ON t.oid = f.conrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
         WHERE f.contype = 'f' AND f.confrelid = $1::pg_catalog.regclass AND f.conrelid <> f.confrelid
         ORDER BY 1, 2, 3
        """,
        relation,
    )
    policies = await conn.fetch(
        """
        SELECT p.polname, p.polpermissive,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
               ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r) END
                       FROM pg_catalog.unnest(p.polroles) AS r ORDER BY 1) AS roles,
               pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS using_expression,
               pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS check_expression,
               c.relrowsecurity
          FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_policy p ON p.polrelid = c.oid
         WHERE c.oid = $1::pg_catalog.regclass ORDER BY p.polname
        """,
        relation,
    )
    triggers = await conn.fetch(
        """
        SELECT t.tgname, pg_catalog.pg_get_triggerdef(t.oid) AS definition, t.tgenabled::pg_catalog.text AS enabled
          FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = $1::pg_catalog.regclass AND NOT t.tgisinternal AND t.tgname <> ALL($2::pg_catalog.text[])
         ORDER BY t.tgname
        """,
        relation,
        [SYNC_TRIGGER, SYNC_TRUNCATE_TRIGGER],
    )
    views = await _views_reading(conn, relation)
    tree = await read_view_tree(conn, [r["oid"] for r in views])
    materialized_readers = []
    for view in tree:
        if view.materialized:
            readers = await _views_reading(conn, qualify(view.schema, view.name))
            materialized_readers += [(r["name"], f"{view.schema}.{view.name}") for r in readers]
    owner_and_grants = await conn.fetchrow(
        """
        SELECT pg_catalog.pg_get_userbyid(c.relowner) AS owner,
               pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
               ARRAY(SELECT ARRAY[CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                                  a.privilege_type, a.is_grantable::pg_catalog.text]
                       FROM pg_catalog.aclexplode(c.relacl) a) AS grants
          FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass
        """,
        relation,
    )
    owned = await conn.fetch(
        """
        SELECT a.attname, pg_catalog.pg_get_serial_sequence($1, a.attname) AS sequence, a.attidentity <> '' AS identity,
               s.relname AS sequence_name,
               ARRAY(SELECT ARRAY[CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(g.grantee) END,
                                  g.privilege_type, g.is_grantable::pg_catalog.text]
                       FROM pg_catalog.aclexplode(s.relacl) g
                      WHERE g.grantee <> s.relowner) AS grants
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class s ON s.oid = pg_catalog.pg_get_serial_sequence($1, a.attname)::pg_catalog.regclass
         WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND pg_catalog.pg_get_serial_sequence($1, a.attname) IS NOT NULL
         ORDER BY a.attnum
        """,
        relation,
    )
    column_grants = await conn.fetch(
        """
        SELECT a.attname, g.privilege_type, g.is_grantable,
               CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(g.grantee) END AS grantee
          FROM pg_catalog.pg_attribute a, pg_catalog.aclexplode(a.attacl) g
         WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum, 4, 2
        """,
        relation,
    )
    return TableFacts(
        schema=schema,
        table=table,
        owner=owner_and_grants["owner"],
        key=tuple((r["attname"], r["type"]) for r in key),
        columns=tuple(r["attname"] for r in columns),
        indexes=tuple(
            IndexFacts(r["relname"], r["definition"], r["on_vector"], r["conname"], r["constraint_definition"])
            for r in indexes
        ),
        foreign_keys=tuple((r["conname"], r["definition"].removesuffix(" NOT VALID")) for r in foreign_keys),
        grants=tuple(
            (grantee, privilege, grantable == "true") for grantee, privilege, grantable in owner_and_grants["grants"]
        ),
        sequences=tuple((r["attname"], r["sequence"]) for r in owned if not r["identity"]),
        identities=tuple((r["attname"], r["sequence"]) for r in owned if r["identity"]),
        identity_sequences=tuple(
            (r["attname"], r["sequence"], r["sequence_name"], tuple((g, p, o == "true") for g, p, o in r["grants"]))
            for r in owned
            if r["identity"]
        ),
        column_grants=tuple(
            (r["attname"], r["grantee"], r["privilege_type"], r["is_grantable"]) for r in column_grants
        ),
        comment=owner_and_grants["comment"],
        row_security=bool(policies and policies[0]["relrowsecurity"]),
        policies=tuple(
            (
                r["polname"],
                "PERMISSIVE" if r["polpermissive"] else "RESTRICTIVE",
                r["command"],
                tuple(r["roles"]),
                r["using_expression"],
                r["check_expression"],
            )
            for r in policies
            if r["polname"] is not None
        ),
        triggers=tuple((r["tgname"], r["definition"], r["enabled"]) for r in triggers),
        views=tuple(tree),
        extras=await read_extras(conn, relation),
        materialized_readers=tuple(materialized_readers),
        referencing=tuple(
            (r["nspname"], r["relname"], r["conname"], r["definition"].removesuffix(" NOT VALID")) for r in referencing
        ),
    )


async def _views_reading(conn: asyncpg.Connection, relation: str) -> list[asyncpg.Record]:
    """The views (and materialized views) whose query reads ``relation`` directly: oid and schema.name."""
    return list(
        await conn.fetch(
            """
            SELECT DISTINCT r.ev_class::bigint AS oid, n.nspname || '.' || c.relname AS name
              FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
              JOIN pg_catalog.pg_class c ON c.oid = r.ev_class JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.refobjid = $1::pg_catalog.regclass AND r.ev_class <> d.refobjid
            """,
            relation,
        )
    )
