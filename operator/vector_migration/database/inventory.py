"""The source inventory: the vector columns to migrate and everything that depends on them.

Read once by the checklist and again inside every converting transaction (where a difference is
drift). Columns, their tables' owners, indexes, views (with their definitions, grants, comments),
other dependents, settings, and the privileges the swap needs. Everything here is a read.
"""

# size: the reading of each kind of object the swap handles, one function each; functions and
# carried indexes/constraints already live in routines.py and carried.py
from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ..api import TableSelection, VectorMigrationSpec, split_qualified_name
from ..vocabulary import Reason
from .carried import read_carried, read_constraints, read_referencing_keys
from .catalog import (
    EXTENSION_MEMBERS,
    Blocker,
    Dependent,
    InstalledExtension,
    SavedDefault,
    SavedIndex,
    SavedSetting,
    SavedView,
    ServerFacts,
    SourceInventory,
    VectorColumn,
    owned_types,
    read_casts,
)
from .partitions import read_partitions
from .routines import read_functions
from .sql import qualify


async def read_inventory(
    conn: asyncpg.Connection,
    spec: VectorMigrationSpec,
    server: ServerFacts,
    source: InstalledExtension,
    *,
    count_rows: bool = True,
) -> SourceInventory:
    """Read columns, indexes, dependents and settings that the swap must handle."""
    source_types = await owned_types(conn, source.oid)
    inventory = SourceInventory(
        server=server,
        source=source,
        source_type_names=source_types,
        casts=await read_casts(conn, list(source_types)),
    )
    await _read_columns(conn, spec, inventory)
    await _read_owners(conn, inventory)
    await _read_indexes(conn, inventory)
    await _read_views(conn, inventory)
    await read_functions(conn, inventory)
    await read_constraints(conn, inventory)
    await read_referencing_keys(conn, inventory)
    await _read_dependents(conn, inventory)
    await _read_settings(conn, inventory)
    await _check_privileges(conn, inventory)
    # Counting needs read access a refused role may lack; with blockers the checklist stops anyway.
    for schema, table in inventory.relations() if count_rows and not inventory.blockers else []:
        inventory.row_counts[(schema, table)] = await conn.fetchval(
            f"SELECT pg_catalog.count(*) FROM {qualify(schema, table)}"
        )
    return inventory


async def _read_owners(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    rows = await conn.fetch(
        """
        SELECT n.nspname, c.relname, pg_catalog.pg_get_userbyid(c.relowner) AS owner
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = ANY($1::pg_catalog.oid[])
        """,
        sorted({column.table_oid for column in inv.columns} | {p.oid for p in inv.partition_columns}),
    )
    inv.owners = {(row["nspname"], row["relname"]): row["owner"] for row in rows}


async def _read_columns(conn: asyncpg.Connection, spec: VectorMigrationSpec, inv: SourceInventory) -> None:
    rows = await conn.fetch(
        """
        SELECT n.nspname, c.relname, c.oid::bigint AS table_oid, c.relkind::text AS relkind,
               a.attname, a.attnum, a.atttypmod, t.oid::bigint AS type_oid, t.typname,
               tn.nspname AS type_schema, t.typcategory = 'A' AS is_array,
               et.typname AS element_name,
               NULLIF(a.attstorage, t.typstorage)::text AS storage
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
          JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
          LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
         WHERE a.attnum > 0 AND NOT a.attisdropped
           AND (t.oid = ANY($1::oid[]) OR et.oid = ANY($1::oid[]))
           AND c.relkind IN ('r', 'p', 'f', 'c')
           AND NOT c.relispartition
         ORDER BY n.nspname, c.relname, a.attnum
        """,
        list(inv.source_type_names),
    )
    found: list[VectorColumn] = []
    for row in rows:
        where = f"{row['nspname']}.{row['relname']}.{row['attname']}"
        if row["relkind"] not in ("r", "p"):
            inv.refused.add((row["table_oid"], row["attnum"]))
            kind = {"f": "foreign table", "c": "composite type"}[row["relkind"]]
            inv.blockers.append(
                Blocker(Reason.UNSUPPORTED_COLUMN, f"column {where} belongs to a {kind}, not supported yet")
            )
            continue
        found.append(
            VectorColumn(
                schema=row["nspname"],
                table=row["relname"],
                table_oid=row["table_oid"],
                column=row["attname"],
                attnum=row["attnum"],
                type_schema=row["type_schema"],
                type_name=row["element_name"] if row["is_array"] else row["typname"],
                typmod=row["atttypmod"],
                array=row["is_array"],
                storage=row["storage"],
                partitioned=row["relkind"] == "p",
            )
        )
    inv.columns = _select_columns(found, spec.tables, inv.blockers)
    await read_partitions(conn, inv)


def _select_columns(
    found: list[VectorColumn], selections: Sequence[TableSelection], blockers: list[Blocker]
) -> list[VectorColumn]:
    """Apply spec.tables: empty means every vector column; InPlace must take all of them."""
    if not selections:
        return found
    wanted: set[tuple[str, str, str]] = set()
    for selection in selections:
        schema, table = selection.qualified()
        columns = [c for c in found if (c.schema, c.table) == (schema, table)]
        if not columns:
            blockers.append(
                Blocker(
                    Reason.TABLE_NOT_FOUND,
                    f"spec.tables: {schema}.{table} has no vector column (or is missing)",
                )
            )
            continue
        names = [split_qualified_name(column)[0] for column in selection.columns] or [c.column for c in columns]
        for name in names:
            if not any(c.column == name for c in columns):
                blockers.append(
                    Blocker(Reason.TABLE_NOT_FOUND, f"spec.tables: {schema}.{table} has no vector column {name!r}")
                )
            wanted.add((schema, table, name))
    left_out = [c for c in found if (c.schema, c.table, c.column) not in wanted]
    if left_out:
        blockers.append(
            Blocker(
                Reason.INCOMPLETE_SELECTION,
                f"InPlace removes the source extension, so every vector column must migrate; "
                f"spec.tables leaves out {', '.join(c.display for c in left_out)}",
            )
        )
    return [c for c in found if (c.schema, c.table, c.column) in wanted]


# size: one catalog query and the mapping of its rows, with a refusal per unsupported shape
async def _read_indexes(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    if not inv.columns:
        await read_carried(conn, inv, [])  # a bit column's pgvector index needs no vector column
        return
    by_attnum = {(c.table_oid, c.attnum): c for c in inv.columns}
    roots = {(c.schema, c.table, c.column): c for c in inv.columns}
    by_attnum |= {(p.oid, p.attnum): roots[(*p.root, p.column)] for p in inv.partition_columns}
    rows = await conn.fetch(
        """
        SELECT i.indexrelid::bigint AS oid, ic.relname AS name, n.nspname AS schema,
               tn.nspname AS table_schema, t.relname AS table_name, i.indrelid::bigint AS table_oid,
               am.amname, i.indnatts, i.indkey::int2[] AS keys, i.indexprs IS NOT NULL AS has_expressions,
               i.indisunique, i.indisvalid, c.conname, ic.reloptions, ts.spcname,
               pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
               pg_catalog.pg_get_expr(i.indpred, i.indrelid) AS predicate,
               pg_catalog.obj_description(i.indexrelid, 'pg_class') AS comment,
               ic.relkind = 'I' AS partitioned,
               (SELECT ARRAY[pn.nspname, pc.relname] FROM pg_catalog.pg_inherits h
                  JOIN pg_catalog.pg_class pc ON pc.oid = h.inhparent
                  JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
                 WHERE h.inhrelid = i.indexrelid) AS attached_to,
               oc.opcname, ocn.nspname AS opclass_schema,
               (SELECT o.oprname FROM pg_catalog.pg_amop ao
                  JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr
                 WHERE ao.amopfamily = oc.opcfamily AND ao.amoppurpose = 'o'
                 ORDER BY ao.amopstrategy LIMIT 1) AS ordering_operator,
               EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                        WHERE d.classid = 'pg_catalog.pg_am'::pg_catalog.regclass AND d.objid = am.oid
                          AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                          AND d.refobjid = $2 AND d.deptype = 'e') AS method_owned
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
          JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
          JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
          JOIN pg_catalog.pg_am am ON am.oid = ic.relam
          JOIN pg_catalog.pg_opclass oc ON oc.oid = i.indclass[0]
          JOIN pg_catalog.pg_namespace ocn ON ocn.oid = oc.opcnamespace
          LEFT JOIN pg_catalog.pg_constraint c ON c.conindid = i.indexrelid
          LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = ic.reltablespace
         WHERE i.indrelid = ANY($1::oid[])
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid = i.indexrelid
                          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.refobjid = i.indrelid
                          AND d.refobjsubid = ANY($3::int2[]))
         ORDER BY n.nspname, ic.relname
        """,
        sorted({oid for oid, _ in by_attnum}),
        inv.source.oid,
        sorted({attnum for _, attnum in by_attnum}),
    )
    partitions = {p.oid for p in inv.partition_columns}
    carried: list[int] = []
    for row in rows:
        keys = list(row["keys"])
        vector_keys = [by_attnum.get((row["table_oid"], key)) for key in keys]
        touches = any(vector_keys) or any(
            (row["table_oid"], attnum) in by_attnum for attnum in await _index_column_refs(conn, row["oid"])
        )
        if not touches:
            continue
        where = f"index {row['schema']}.{row['name']}"
        column = vector_keys[0] if len(keys) == 1 else None
        if row["conname"]:
            inv.refused.add((row["oid"], 0))
            inv.blockers.append(
                Blocker(
                    Reason.UNMAPPED_INDEX,
                    f"{where} ({row['definition']}) serves constraint {row['conname']}; "
                    "drop the constraint before migrating and create it for the target afterwards",
                )
            )
            continue
        in_tree = row["partitioned"] or row["table_oid"] in partitions
        if column is None or row["has_expressions"] or row["indisunique"]:
            if in_tree:
                inv.refused.add((row["oid"], 0))
                inv.blockers.append(
                    Blocker(
                        Reason.UNMAPPED_INDEX,
                        f"{where} ({row['definition']}) is an expression, unique or several-key index in a "
                        "partitioned table, not supported yet; drop it before migrating and create it for the "
                        "target afterwards",
                    )
                )
                continue
            carried.append(row["oid"])  # an expression or several keys: rewritten by the planner
            continue
        if not row["indisvalid"]:
            inv.warnings.append(f"{where} is INVALID; it is rebuilt on the target like the others")
        options = tuple((key, value) for key, _, value in (o.partition("=") for o in row["reloptions"] or []))
        inv.indexes.append(
            SavedIndex(
                oid=row["oid"],
                schema=row["schema"],
                name=row["name"],
                table_schema=row["table_schema"],
                table=row["table_name"],
                column=column.column,
                method=row["amname"],
                method_owned_by_source=row["method_owned"],
                opclass_schema=row["opclass_schema"],
                opclass=row["opcname"],
                ordering_operator=row["ordering_operator"],
                options=options,
                predicate=row["predicate"],
                tablespace=row["spcname"],
                definition=row["definition"],
                comment=row["comment"],
                root=(column.schema, column.table) if in_tree else None,
                attached_to=tuple(row["attached_to"]) if row["attached_to"] else None,
                partitioned=row["partitioned"],
            )
        )
    await read_carried(conn, inv, carried)


async def _index_column_refs(conn: asyncpg.Connection, index_oid: int) -> list[int]:
    rows = await conn.fetch(
        """
        SELECT refobjsubid FROM pg_catalog.pg_depend
         WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND objid = $1
           AND refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND refobjsubid > 0
        """,
        index_oid,
    )
    return [row["refobjsubid"] for row in rows]


# The objects an extension owns ($1: the extension's oid), as a CTE named "members".


async def _read_dependents(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    """Objects that depend on the source extension's members, other than what the swap handles."""
    rows = await conn.fetch(
        EXTENSION_MEMBERS
        + """
        SELECT DISTINCT d.classid::pg_catalog.regclass::text AS catalog, d.objid::bigint AS objid, d.objsubid,
               pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS description,
               (SELECT ev_class::bigint FROM pg_catalog.pg_rewrite r
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid) AS view_oid,
               (SELECT ARRAY[n.nspname, c.relname, a.attname, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
                             pg_catalog.pg_get_userbyid(c.relowner)]
                  FROM pg_catalog.pg_attrdef ad
                  JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
                  JOIN pg_catalog.pg_class c ON c.oid = ad.adrelid
                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND ad.oid = d.objid) AS default_of,
               (SELECT a.attgenerated <> '' FROM pg_catalog.pg_attrdef ad
                  JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
                 WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND ad.oid = d.objid) AS generated
          FROM pg_catalog.pg_depend d
          JOIN members m ON d.refclassid = m.classid AND d.refobjid = m.objid
         WHERE d.deptype IN ('n', 'a')
           AND NOT EXISTS (SELECT 1 FROM members m2 WHERE m2.classid = d.classid AND m2.objid = d.objid)
           -- parts of the extension's own objects (operator family members) come and go with it
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d2
                             JOIN members m3 ON d2.refclassid = m3.classid AND d2.refobjid = m3.objid
                            WHERE d2.classid = d.classid AND d2.objid = d.objid AND d2.deptype IN ('a', 'i'))
        """,
        inv.source.oid,
    )
    handled = {(oid, 0) for oid in [i.oid for i in inv.indexes] + [i.oid for i in inv.carried_indexes]}
    handled |= {(c.table_oid, c.attnum) for c in inv.columns} | {(p.oid, p.attnum) for p in inv.partition_columns}
    saved_constraints = {constraint.oid for constraint in inv.constraints}
    saved_views = {view.oid for view in inv.views}
    saved_functions = {function.oid for function in inv.functions}
    for row in rows:
        catalog, description = row["catalog"], row["description"]
        if catalog == "pg_class" and (row["objid"], row["objsubid"]) in handled | inv.refused:
            continue
        if catalog == "pg_class" and row["objid"] in saved_views:
            continue  # columns of views that are saved and recreated
        if catalog == "pg_rewrite" and row["view_oid"] is not None:
            continue  # views are read by _read_views and saved/recreated around the conversion
        if catalog == "pg_constraint" and row["objid"] in saved_constraints:
            continue  # CHECK constraints are saved and added again for the target
        if catalog == "pg_proc" and row["objid"] in saved_functions:
            continue  # functions are read by _read_functions and re-created for the target
        if catalog == "pg_attrdef" and not row["generated"] and row["default_of"] is not None:
            _save_default(inv, row["default_of"])
            continue
        if catalog == "pg_attrdef":
            kind = "generated column" if row["generated"] else "column default"
            message = f"{description} ({kind}) uses the source extension; drop it before migrating"
        else:
            message = (
                f"{description} depends on extension {inv.source.name}; drop it before migrating "
                "and recreate it for the target afterwards"
            )
        inv.dependents.append(Dependent(kind=catalog.removeprefix("pg_"), name=description, handling="blocks"))
        inv.blockers.append(Blocker(Reason.BLOCKING_DEPENDENT, message))


def _save_default(inv: SourceInventory, default_of: list[str]) -> None:
    """A column default using the source's types, saved once (it may depend on several of its objects)."""
    schema, table, column, expression, owner = default_of
    if (schema, table, column) in {(saved.schema, saved.table, saved.column) for saved in inv.defaults}:
        return
    inv.defaults.append(SavedDefault(schema, table, column, expression, owner))
    inv.dependents.append(
        Dependent(kind="column default", name=f"{schema}.{table}.{column}", handling="set again for the target")
    )


async def _read_views(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    """Views and materialized views over vector columns or source objects, and views over those."""
    seed_rows = await conn.fetch(
        EXTENSION_MEMBERS
        + """
        SELECT DISTINCT r.ev_class::bigint AS oid
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
           AND r.ev_class <> d.refobjid
           AND ((d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                 AND (d.refobjid, d.refobjsubid::int) IN
                     (SELECT * FROM ROWS FROM (pg_catalog.unnest($2::oid[]), pg_catalog.unnest($3::int[]))))
                OR (d.refclassid, d.refobjid) IN (SELECT classid, objid FROM members))
        """,
        inv.source.oid,
        [c.table_oid for c in inv.columns],
        [c.attnum for c in inv.columns],
    )
    for view in await read_view_tree(conn, [row["oid"] for row in seed_rows]):
        inv.views.append(view)
        inv.dependents.append(
            Dependent(
                kind="materialized view" if view.materialized else "view",
                name=f"{view.schema}.{view.name}",
                handling="saved, dropped and recreated inside the swap transaction",
            )
        )


# size: one catalog query per level and per view, and the mapping of its rows (definition, grants, indexes)
async def read_view_tree(conn: asyncpg.Connection, seeds: list[int]) -> list[SavedView]:
    """The views ``seeds`` and every view over them, each with its depth, in creation order."""
    views: list[SavedView] = []
    depth: dict[int, int] = dict.fromkeys(seeds, 0)
    frontier = set(depth)
    while frontier:
        rows = await conn.fetch(
            """
            SELECT DISTINCT r.ev_class::bigint AS oid, d.refobjid::bigint AS parent
              FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
             WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.refobjid = ANY($1::oid[]) AND r.ev_class <> d.refobjid
            """,
            sorted(frontier),
        )
        frontier = set()
        for row in rows:
            wanted = depth[row["parent"]] + 1
            if depth.get(row["oid"], -1) < wanted:
                if wanted > len(depth) + 1:
                    raise RuntimeError("cycle in view dependencies")
                depth[row["oid"]] = wanted
                frontier.add(row["oid"])
    for oid, level in depth.items():
        row = await conn.fetchrow(
            """
            SELECT n.nspname, c.relname, c.relkind::text AS relkind, c.reloptions, c.relispopulated,
                   pg_catalog.pg_get_userbyid(c.relowner) AS owner,
                   pg_catalog.pg_get_viewdef(c.oid) AS definition,
                   pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
                   ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i
                          WHERE i.indrelid = c.oid ORDER BY i.indexrelid) AS indexes,
                   ARRAY(SELECT ROW(CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                         ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                                    a.privilege_type, a.is_grantable)::text
                           FROM pg_catalog.aclexplode(c.relacl) a
                          WHERE a.grantee <> c.relowner ORDER BY 1) AS grants
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = $1
            """,
            oid,
        )
        grants = []
        for text in row["grants"]:
            grantee, privilege, grantable = _parse_row_text(text)
            grants.append((grantee, privilege, grantable == "t"))
        view = SavedView(
            oid=oid,
            schema=row["nspname"],
            name=row["relname"],
            materialized=row["relkind"] == "m",
            definition=row["definition"].strip().rstrip(";"),
            options=tuple(row["reloptions"] or ()),
            owner=row["owner"],
            grants=tuple(grants),
            comment=row["comment"],
            populated=row["relispopulated"],
            index_definitions=tuple(row["indexes"]),
            depth=level,
        )
        views.append(view)
    return sorted(views, key=lambda v: (v.depth, v.schema, v.name))


def _parse_row_text(text: str) -> tuple[str, str, str]:
    """Parse the text form of a three-field ROW(): (a,b,c) with optional double quotes."""
    body = text[1:-1]
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(body):
        char = body[index]
        if quoted and char == '"' and index + 1 < len(body) and body[index + 1] == '"':
            current.append('"')
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    fields.append("".join(current))
    return fields[0], fields[1], fields[2]


async def _read_settings(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    """Settings of the source's access methods stored for this database or for roles."""
    prefixes = sorted({index.method for index in inv.indexes if index.method_owned_by_source} | {"hnsw", "ivfflat"})
    rows = await conn.fetch(
        """
        SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(s.setrole) END AS role,
               s.setdatabase <> 0 AS database_scoped, entry
          FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS entry
         WHERE s.setdatabase IN (0, $1::oid) AND NOT (s.setdatabase = 0 AND s.setrole = 0)
         ORDER BY 1 NULLS FIRST, 2, 3
        """,
        inv.server.database_oid,
    )
    for row in rows:
        name, _, value = row["entry"].partition("=")
        if name.split(".", 1)[0] in prefixes and "." in name:
            inv.settings.append(SavedSetting(row["role"], row["database_scoped"], name, value))


async def _check_privileges(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    if inv.server.superuser:
        return
    problems = []
    not_owned = await conn.fetch(
        """
        SELECT n.nspname || '.' || c.relname AS name FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = ANY($1::oid[]) AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE')
        """,
        sorted({c.table_oid for c in inv.columns} | {v.oid for v in inv.views}),
    )
    problems += [f"must own {row['name']}" for row in not_owned]
    owns_extension = await conn.fetchval(
        # The admin login, when the session acts as the application's role, drops it (as_admin).
        "SELECT pg_catalog.pg_has_role(extowner, 'USAGE') OR pg_catalog.pg_has_role(SESSION_USER, extowner, 'USAGE')"
        " FROM pg_catalog.pg_extension WHERE oid = $1",
        inv.source.oid,
    )
    if not owns_extension:
        problems.append(f"must own extension {inv.source.name} to drop it")
    if not await conn.fetchval("SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')"):
        problems.append("needs CREATE on the database (for the target extension and the journal schema)")
    if problems:
        inv.blockers.append(Blocker(Reason.INSUFFICIENT_PRIVILEGE, f"role {inv.server.user} " + "; ".join(problems)))
