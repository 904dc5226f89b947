"""What else a table carries that a shadow must have before it takes the table's place.

``CREATE TABLE … (LIKE … INCLUDING ALL)`` copies columns, defaults, CHECK constraints, column
comments, storage and identity, but not: the table's storage parameters, its columns' statistics
targets and options, its rules, its membership of publications, its CLUSTER mark, its replica
identity, the comments on its indexes and on the constraints the shadow makes again, and (LIKE
names them after the shadow) its extended statistics under their names. Each is read here
(``read_extras``), given to the shadow when it is made (``on_shadow``), and moved at the finalize
(``at_finalize``): what belongs to the table by name (statistics, rules, publications) is taken
from the table kept aside and given to the migrated one. A rollback after the finalize gives it
back (``back_from_finalize``).
"""

from __future__ import annotations

import asyncpg

from ...database.ddl import SEQUENCE_PRIVILEGES, grant_statements, set_storage_sql
from ...database.sql import qualify, quote_ident, quote_literal
from ...engine.plan import PlanningError
from ...vocabulary import Reason
from .names import INDEX_SUFFIX, OLD_SUFFIX, SHADOW_SUFFIX, derived_name
from .recorded import PublicationMembership, ShadowTable, StatisticsObject, TableExtras

# ALTER TABLE … <state> RULE, by pg_rewrite.ev_enabled (as triggers: origin, disabled, replica, always)
RULE_STATES = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


# size: one query per kind of thing a table carries, each a few lines
async def read_extras(conn: asyncpg.Connection, relation: str) -> TableExtras:
    """Everything of ``relation`` (qualified) that LIKE does not copy, as the journal keeps it."""
    table = await conn.fetchrow(
        """
        SELECT c.reloptions, c.relreplident::pg_catalog.text AS replica_identity,
               (SELECT i.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                 WHERE x.indrelid = c.oid AND x.indisreplident) AS replica_index,
               (SELECT i.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                 WHERE x.indrelid = c.oid AND x.indisclustered) AS clustered
          FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass
        """,
        relation,
    )
    columns = await conn.fetch(
        """
        SELECT a.attname, a.attstattarget::int AS statistics, NULLIF(a.attstorage, t.typstorage)::pg_catalog.text AS
               storage, a.attoptions
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND (a.attstattarget IS NOT NULL AND a.attstattarget >= 0 OR a.attoptions IS NOT NULL
                OR a.attstorage <> t.typstorage)
         ORDER BY a.attnum
        """,
        relation,
    )
    comments = await conn.fetch(
        """
        SELECT 'index' AS kind, i.relname AS name, pg_catalog.obj_description(i.oid, 'pg_class') AS comment
          FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
         WHERE x.indrelid = $1::pg_catalog.regclass AND pg_catalog.obj_description(i.oid, 'pg_class') IS NOT NULL
        UNION ALL
        SELECT 'constraint', k.conname, pg_catalog.obj_description(k.oid, 'pg_constraint')
          FROM pg_catalog.pg_constraint k
         WHERE k.conrelid = $1::pg_catalog.regclass AND k.contype IN ('p', 'u', 'x', 'f')
           AND pg_catalog.obj_description(k.oid, 'pg_constraint') IS NOT NULL
         ORDER BY 1, 2
        """,
        relation,
    )
    statistics = await conn.fetch(
        """
        SELECT n.nspname, s.stxname, pg_catalog.pg_get_statisticsobjdef(s.oid) AS definition,
               s.stxstattarget::int AS target, pg_catalog.obj_description(s.oid, 'pg_statistic_ext') AS comment
          FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
         WHERE s.stxrelid = $1::pg_catalog.regclass ORDER BY s.stxname
        """,
        relation,
    )
    rules = await conn.fetch(
        """
        SELECT r.rulename, pg_catalog.pg_get_ruledef(r.oid) AS definition, r.ev_enabled::pg_catalog.text AS enabled,
               pg_catalog.obj_description(r.oid, 'pg_rewrite') AS comment
          FROM pg_catalog.pg_rewrite r WHERE r.ev_class = $1::pg_catalog.regclass AND r.rulename <> '_RETURN'
         ORDER BY r.rulename
        """,
        relation,
    )
    publications = await conn.fetch(
        """
        SELECT p.pubname,
               (SELECT pg_catalog.array_agg(a.attname ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = r.prrelid AND a.attnum = ANY(r.prattrs::pg_catalog.int2[])) AS columns,
               pg_catalog.pg_get_expr(r.prqual, r.prrelid) AS row_filter
          FROM pg_catalog.pg_publication_rel r JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid
         WHERE r.prrelid = $1::pg_catalog.regclass ORDER BY p.pubname
        """,
        relation,
    )
    return TableExtras.model_validate(
        {
            "options": list(table["reloptions"] or []),
            "replicaIdentity": table["replica_identity"],
            "replicaIndex": table["replica_index"],
            "clustered": table["clustered"],
            "columns": [
                {
                    "column": r["attname"],
                    "statistics": r["statistics"] if r["statistics"] is not None and r["statistics"] >= 0 else None,
                    "storage": r["storage"],
                    "options": list(r["attoptions"] or []),
                }
                for r in columns
            ],
            "indexComments": {r["name"]: r["comment"] for r in comments if r["kind"] == "index"},
            "constraintComments": {r["name"]: r["comment"] for r in comments if r["kind"] == "constraint"},
            "statistics": [
                {
                    "schema": r["nspname"],
                    "name": r["stxname"],
                    "definition": r["definition"],
                    "target": r["target"] if r["target"] is not None and r["target"] >= 0 else None,
                    "comment": r["comment"],
                }
                for r in statistics
            ],
            "rules": [
                {"name": r["rulename"], "definition": r["definition"], "enabled": r["enabled"], "comment": r["comment"]}
                for r in rules
            ],
            "publications": [
                {"name": r["pubname"], "columns": r["columns"], "rowFilter": r["row_filter"]} for r in publications
            ],
        }
    )


def _options(pairs: list[str]) -> str:
    """reloptions/attoptions ("key=value") as a SET ( … ) list."""
    items = [pair.split("=", 1) for pair in pairs]
    return ", ".join(f"{quote_ident(key)} = {quote_literal(value)}" for key, value in items)


def on_shadow(table: ShadowTable, shadow_index_names: dict[str, str], constraint_names: dict[str, str]) -> list[str]:
    """The shadow given what LIKE does not copy, under its own names until the finalize.

    ``shadow_index_names`` maps each original index to the shadow's; ``constraint_names`` each
    original constraint the shadow makes again to the shadow's name for it.
    """
    extras, schema = table.extras, table.table_schema
    shadow = qualify(schema, table.shadow)
    sql = []
    if extras.options:
        sql.append(f"ALTER TABLE {shadow} SET ({_options(extras.options)})")
    for column in extras.columns:
        name = quote_ident(column.column)
        if column.statistics is not None:
            sql.append(f"ALTER TABLE {shadow} ALTER COLUMN {name} SET STATISTICS {int(column.statistics)}")
        storage = set_storage_sql(shadow, column.column, column.storage) if column.storage else None
        if storage is not None:
            sql.append(storage)
        if column.options:
            sql.append(f"ALTER TABLE {shadow} ALTER COLUMN {name} SET ({_options(column.options)})")
    for original, comment in sorted(extras.index_comments.items()):
        if original in shadow_index_names:
            index = qualify(schema, shadow_index_names[original])
            sql.append(f"COMMENT ON INDEX {index} IS {quote_literal(comment)}")
    for original, comment in sorted(extras.constraint_comments.items()):
        if original in constraint_names:
            constraint = quote_ident(constraint_names[original])
            sql.append(f"COMMENT ON CONSTRAINT {constraint} ON {shadow} IS {quote_literal(comment)}")
    for statistic in extras.statistics:
        sql += _statistics_on(statistic.definition, schema, table.shadow, derived_name(statistic.name, INDEX_SUFFIX))
        made = qualify(statistic.statistics_schema, derived_name(statistic.name, INDEX_SUFFIX))
        if statistic.target is not None:
            sql.append(f"ALTER STATISTICS {made} SET STATISTICS {int(statistic.target)}")
        if statistic.comment is not None:
            sql.append(f"COMMENT ON STATISTICS {made} IS {quote_literal(statistic.comment)}")
    if extras.clustered in shadow_index_names:
        sql.append(f"ALTER TABLE {shadow} CLUSTER ON {quote_ident(shadow_index_names[extras.clustered])}")
    identity = {"f": "FULL", "n": "NOTHING"}.get(extras.replica_identity)
    if identity is not None:
        sql.append(f"ALTER TABLE {shadow} REPLICA IDENTITY {identity}")
    elif extras.replica_identity == "i" and extras.replica_index in shadow_index_names:
        using = quote_ident(shadow_index_names[extras.replica_index])
        sql.append(f"ALTER TABLE {shadow} REPLICA IDENTITY USING INDEX {using}")
    return sql


def _statistics_on(definition: str, schema: str, table: str, name: str) -> list[str]:
    """A CREATE STATISTICS (pg_get_statisticsobjdef's) moved to another table under another name, by parsing it."""
    # Imported here: the parser costs the operator ~4 MB of resident memory, paid only when it is needed.
    from pglast import ast, parse_sql
    from pglast.stream import RawStream

    statement = parse_sql(definition)[0].stmt
    if not isinstance(statement, ast.CreateStatsStmt) or not statement.defnames:
        raise PlanningError(Reason.BLOCKING_DEPENDENT, f"cannot read the statistics definition {definition!r}")
    statement.defnames = (*statement.defnames[:-1], ast.String(sval=name))
    statement.relations = (ast.RangeVar(schemaname=schema, relname=table, inh=True, relpersistence="p"),)
    return [str(RawStream()(statement))]


def identity_sequences_renamed(table: ShadowTable) -> list[str]:
    """The migrated table's identity sequences take the originals' names and grants; the originals go aside.

    PostgreSQL named the shadow's own (LIKE … INCLUDING IDENTITY) after the shadow; code that names
    the sequence (setval('documents_id_seq', …), a default elsewhere) must find the one in use.
    """
    schema = table.table_schema
    source = qualify(schema, table.table)
    sql = []
    for identity in table.identity_sequences:
        aside = quote_ident(derived_name(identity.name, OLD_SUFFIX))
        sql.append(f"ALTER SEQUENCE {identity.sequence} RENAME TO {aside}")
        rename = (
            "DO $vmig$BEGIN EXECUTE pg_catalog.format('ALTER SEQUENCE %s RENAME TO %I', "
            f"pg_catalog.pg_get_serial_sequence({quote_literal(source)}, {quote_literal(identity.column)}), "
            f"{quote_literal(identity.name)}); END$vmig$"
        )
        sql.append(rename)
        grants = [(g.grantee, g.privilege, g.grantable) for g in identity.grants]
        sql += grant_statements(f"SEQUENCE {qualify(schema, identity.name)}", grants, SEQUENCE_PRIVILEGES)
    return sql


def identity_sequences_back(table: ShadowTable) -> list[str]:
    """A rollback after the finalize: the originals' identity sequences take their names back."""
    schema = table.table_schema
    sql = []
    for identity in table.identity_sequences:
        migrated = quote_ident(derived_name(identity.name, SHADOW_SUFFIX))
        sql.append(f"ALTER SEQUENCE {qualify(schema, identity.name)} RENAME TO {migrated}")
        aside = qualify(schema, derived_name(identity.name, OLD_SUFFIX))
        sql.append(f"ALTER SEQUENCE {aside} RENAME TO {quote_ident(identity.name)}")
    return sql


def at_finalize(table: ShadowTable) -> list[str]:
    """Once the shadow has the table's name: the statistics, rules and publications it carried by name move to it.

    The table kept aside keeps its rules, disabled (the reverse mirror's writes must not fire them a
    second time, or be swallowed by a DO INSTEAD), and leaves the publications (its mirrored writes
    are not the application's changes).
    """
    extras, schema = table.extras, table.table_schema
    source, old = qualify(schema, table.table), qualify(schema, table.old)
    sql = []
    for index in table.vector_indexes:  # built after the backfill, perhaps concurrently: named as the original now
        comment = extras.index_comments.get(index.original)
        if comment is not None:
            sql.append(f"COMMENT ON INDEX {qualify(schema, index.original)} IS {quote_literal(comment)}")
    for statistic in extras.statistics:  # the original's aside, the shadow's to its name
        sql += _statistics_renamed(statistic, OLD_SUFFIX, INDEX_SUFFIX)
    for rule in extras.rules:
        sql.append(rule.definition.removesuffix(";"))  # pg_get_ruledef names the table: the migrated one now
        if rule.enabled != "O":
            sql.append(f"ALTER TABLE {source} {RULE_STATES[rule.enabled]} RULE {quote_ident(rule.name)}")
        if rule.comment is not None:
            sql.append(f"COMMENT ON RULE {quote_ident(rule.name)} ON {source} IS {quote_literal(rule.comment)}")
        sql.append(f"ALTER TABLE {old} DISABLE RULE {quote_ident(rule.name)}")
    for publication in extras.publications:
        sql.append(f"ALTER PUBLICATION {quote_ident(publication.name)} DROP TABLE {old}")
        sql.append(f"ALTER PUBLICATION {quote_ident(publication.name)} ADD TABLE {_published(source, publication)}")
    return sql


def _statistics_renamed(statistic: StatisticsObject, aside: str, incoming: str) -> list[str]:
    """The statistics object under its name goes to ``name + aside``; the one at ``name + incoming`` takes the name."""
    schema, name = statistic.statistics_schema, statistic.name
    return [
        f"ALTER STATISTICS {qualify(schema, name)} RENAME TO {quote_ident(derived_name(name, aside))}",
        f"ALTER STATISTICS {qualify(schema, derived_name(name, incoming))} RENAME TO {quote_ident(name)}",
    ]


def _published(relation: str, publication: PublicationMembership) -> str:
    """A relation as ALTER PUBLICATION … ADD TABLE lists it: with the columns and rows it publishes."""
    listed = f" ({', '.join(quote_ident(c) for c in publication.columns)})" if publication.columns else ""
    return f"{relation}{listed}" + (f" WHERE ({publication.row_filter})" if publication.row_filter else "")


def back_from_finalize(table: ShadowTable) -> list[str]:
    """A rollback after the finalize, once the names are back: the original table takes back what it carried."""
    extras, schema = table.extras, table.table_schema
    source, shadow = qualify(schema, table.table), qualify(schema, table.shadow)
    sql = []
    for statistic in extras.statistics:  # the migrated table's goes with it (the shadow again), the original's back
        sql += _statistics_renamed(statistic, SHADOW_SUFFIX, OLD_SUFFIX)
    for rule in extras.rules:
        sql.append(f"ALTER TABLE {source} {RULE_STATES[rule.enabled]} RULE {quote_ident(rule.name)}")
        sql.append(f"DROP RULE IF EXISTS {quote_ident(rule.name)} ON {shadow}")
    for publication in extras.publications:
        sql.append(f"ALTER PUBLICATION {quote_ident(publication.name)} DROP TABLE {shadow}")
        sql.append(f"ALTER PUBLICATION {quote_ident(publication.name)} ADD TABLE {_published(source, publication)}")
    return sql
