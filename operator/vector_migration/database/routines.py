"""Functions and procedures that use the source extension's types: found, and saved to be carried across.

PostgreSQL records a dependency for a signature that uses a type, and for a ``BEGIN ATOMIC`` body;
it records none for a plpgsql or quoted SQL body, so those are read with PostgreSQL's own scanner.
What is found is saved (definition, owner, privileges, comment) and re-created for the target by
the swap (engine.rewrite); here nothing changes the database.
"""

from __future__ import annotations

import asyncpg

from ..vocabulary import JOURNAL_SCHEMA
from .catalog import EXTENSION_MEMBERS, Dependent, SavedFunction, SourceInventory

# Functions and procedures outside the system schemas and any extension, with what carrying them needs.
_FUNCTIONS = """
    SELECT p.oid::bigint AS oid, n.nspname, p.proname, p.prokind = 'p' AS procedure, l.lanname, p.prosrc,
           pg_catalog.pg_get_function_identity_arguments(p.oid) AS identity,
           pg_catalog.pg_get_userbyid(p.proowner) AS owner,
           pg_catalog.obj_description(p.oid, 'pg_proc') AS comment,
           -- the search_path its body is checked under: its own SET, else what its owner's
           -- sessions in this database start with, else the server's default
           COALESCE(
               (SELECT pg_catalog.substr(c, 13) FROM pg_catalog.unnest(p.proconfig) c
                WHERE c LIKE 'search\\_path=%'),
               (SELECT pg_catalog.substr(c, 13)
                  FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c
                 WHERE c LIKE 'search\\_path=%'
                   AND s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database
                                              WHERE datname = pg_catalog.current_database()))
                   AND s.setrole IN (0, p.proowner)
                 ORDER BY s.setdatabase = 0, s.setrole = 0 LIMIT 1),
               (SELECT boot_val FROM pg_catalog.pg_settings WHERE name = 'search_path')) AS search_path,
           CASE WHEN p.proacl IS NULL THEN NULL ELSE ARRAY(
               SELECT ARRAY[CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                            a.privilege_type, a.is_grantable::pg_catalog.text]
                 FROM pg_catalog.aclexplode(p.proacl) a WHERE a.grantee <> p.proowner) END AS grants,
           EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN members m
                     ON d.refclassid = m.classid AND d.refobjid = m.objid
                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
                      AND d.deptype = 'n') AS depends
      FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      JOIN pg_catalog.pg_language l ON l.oid = p.prolang
     WHERE p.prokind IN ('f', 'p')
       AND n.nspname <> ALL($2::text[]) AND n.nspname NOT LIKE 'pg\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                        WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid
                          AND e.deptype = 'e')
     ORDER BY n.nspname, p.proname, p.oid
    """


async def read_functions(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    """Functions and procedures (outside extensions) that use a source type.

    In their signature, or named in an SQL or plpgsql body, for which PostgreSQL records no dependency.
    """
    type_names = set(inv.source_type_names.values())
    rows = await conn.fetch(
        EXTENSION_MEMBERS + _FUNCTIONS,
        inv.source.oid,
        ["pg_catalog", "information_schema", JOURNAL_SCHEMA],
    )
    for row in rows:
        if not (row["depends"] or (row["lanname"] in ("sql", "plpgsql") and _names_a_type(row["prosrc"], type_names))):
            continue
        definition = await conn.fetchval("SELECT pg_catalog.pg_get_functiondef($1::pg_catalog.oid)", row["oid"])
        grants = None if row["grants"] is None else tuple((g, p, o == "true") for g, p, o in row["grants"])
        inv.functions.append(
            SavedFunction(
                oid=row["oid"],
                schema=row["nspname"],
                name=row["proname"],
                procedure=row["procedure"],
                identity=row["identity"],
                definition=definition,
                owner=row["owner"],
                grants=grants,
                comment=row["comment"],
                language=row["lanname"],
                search_path=row["search_path"],
            )
        )
        inv.dependents.append(
            Dependent(
                kind="procedure" if row["procedure"] else "function",
                name=f"{row['nspname']}.{row['proname']}({row['identity']})",
                handling="recreated for the target",
            )
        )


def _names_a_type(body: str, type_names: set[str]) -> bool:
    """Whether a function body names one of the types, read with PostgreSQL's own scanner."""
    # Imported here: the parser costs the operator ~4 MB of memory (bench/), needed only for bodies.
    from pglast.parser import ParseError, scan

    try:
        tokens = scan(body)
    except ParseError:
        return True  # unreadable: carried (and refused there, by name) rather than missed
    return any(token.name == "IDENT" and body[token.start : token.end + 1].strip('"') in type_names for token in tokens)
