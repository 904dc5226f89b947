"""What Replicate reads from the catalog: the server's replication capacity, the tables, the database's own settings."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ...database.catalog import Blocker
from ...database.sql import qualify, quote_ident, quote_literal
from ...engine.rewrite import setting_value_sql
from ...vocabulary import JOURNAL_SCHEMA, JOURNAL_TABLE, Reason
from .names import ReplicaNames

# Every ordinary table of the database except the catalogs' and extensions' own (their contents come
# with CREATE EXTENSION). The database moves whole: a table left out would be empty after the switchover.
_TABLES = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind, c.relpersistence::text AS persistence,
       c.relreplident::text AS identity,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_key
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.deptype = 'e'
                      AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid)
 ORDER BY 1, 2
"""


@dataclass(frozen=True)
class DatabaseFacts:
    """The source database's own properties, which a schema-only dump does not carry."""

    owner: str
    encoding: str
    collate: str
    ctype: str
    comment: str | None
    settings: tuple[tuple[str | None, str], ...]  # (role or None, "name=value") set IN DATABASE
    grants: tuple[str, ...]  # GRANT statements for the database's privileges, with {database} to fill


async def replicated_tables(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """Every table whose rows move to the new database, the migration's journal included."""
    tables = {(r["schema"], r["name"]) for r in await conn.fetch(_TABLES) if r["kind"] == "r"}
    return sorted(tables | {(JOURNAL_SCHEMA, JOURNAL_TABLE)})


async def replication_blockers(conn: asyncpg.Connection, names: ReplicaNames, migration: str) -> list[Blocker]:
    """What keeps this server and database from a logical replica: each with what to do, all at once.

    On another server (names.across_servers) the source publishes the copy and subscribes to the
    channel back; the other server's own needs are target_server_blockers'.
    """
    sync_workers = await sync_workers_per_subscription(conn)
    tables = await conn.fetch(_TABLES)
    if names.across_servers:
        capacity = Capacity(slots=1 + sync_workers, workers=1, origins=1)
        name_blockers: list[Blocker] = []
    else:
        capacity = Capacity(slots=2 + sync_workers, workers=2, origins=1 + sync_workers)
        name_blockers = await name_blockers_on(conn, names, migration, [names.target, names.old])
    return [
        *await server_blockers(conn, ADMIN_LOGIN),
        *await capacity_blockers(conn, capacity),
        *await _table_blockers(conn, tables),
        *await _uncarried_blockers(conn, tables),
        *name_blockers,
    ]


ADMIN_LOGIN = "spec.database.adminSecretRef, --admin-database-url"


@dataclass(frozen=True)
class Capacity:
    """What one server gives Replicate: slots it publishes from, workers and origins it subscribes with.

    A subscription's table copies each take a temporary slot on the publisher and an origin on the
    subscriber, max_sync_workers_per_subscription at a time.
    """

    slots: int
    workers: int
    origins: int


async def sync_workers_per_subscription(conn: asyncpg.Connection) -> int:
    """How many tables a subscription on this server copies at a time."""
    return int(await conn.fetchval("SELECT pg_catalog.current_setting('max_sync_workers_per_subscription')"))


# Before 16 a subscription applies rows as its owner, a superuser: a table owner's ENABLE ALWAYS
# trigger would run with that role. From 16 it switches to each table's owner (run_as_owner = false).
MIN_REPLICATE_SERVER_VERSION_NUM = 160000


async def server_blockers(conn: asyncpg.Connection, login_field: str) -> list[Blocker]:
    """The server's version, wal_level, and a login (given as ``login_field``) that may create subscriptions."""
    blockers: list[Blocker] = []
    if await conn.fetchval("SELECT pg_catalog.current_setting('server_version_num')::int") < (
        MIN_REPLICATE_SERVER_VERSION_NUM
    ):
        blockers.append(
            Blocker(
                Reason.UNSUPPORTED_SERVER,
                "Replicate needs PostgreSQL 16 or newer: before 16 a subscription applies rows as a superuser, "
                "and a table owner's triggers would run with its privileges; choose InPlace or Parallel",
            )
        )
    wal_level = await conn.fetchval("SELECT pg_catalog.current_setting('wal_level')")
    if wal_level != "logical":
        blockers.append(
            Blocker(
                Reason.REPLICATION_UNAVAILABLE,
                f"wal_level is {wal_level}; Replicate needs wal_level = logical "
                "(ALTER SYSTEM SET wal_level = logical, then restart the server; CloudNativePG: "
                "postgresql.parameters.wal_level)",
            )
        )
    if not await conn.fetchval("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = SESSION_USER"):
        blockers.append(
            Blocker(
                Reason.INSUFFICIENT_PRIVILEGE,
                "Replicate creates a database, a publication of every table, replication slots and subscriptions: "
                f"it needs a superuser login ({login_field})",
            )
        )
    return blockers


async def capacity_blockers(conn: asyncpg.Connection, needed: Capacity) -> list[Blocker]:
    """Free replication slots, logical replication workers and replication origins, against what is needed."""
    blockers: list[Blocker] = []
    slots_used = await conn.fetchval("SELECT count(*) FROM pg_catalog.pg_replication_slots")
    free = int(await conn.fetchval("SELECT pg_catalog.current_setting('max_replication_slots')")) - slots_used
    if free < needed.slots:
        blockers.append(
            Blocker(
                Reason.REPLICATION_UNAVAILABLE,
                f"{free} free replication slot(s) (max_replication_slots); Replicate needs {needed.slots}",
            )
        )
    workers = await conn.fetchrow(
        "SELECT pg_catalog.current_setting('max_logical_replication_workers')::int AS max, "
        "(SELECT count(*) FROM pg_catalog.pg_stat_subscription WHERE pid IS NOT NULL)::int AS used"
    )
    if workers["max"] - workers["used"] < needed.workers:
        # Without a free worker the subscription waits for one, and the copy never starts.
        blockers.append(
            Blocker(
                Reason.REPLICATION_UNAVAILABLE,
                f"{workers['max'] - workers['used']} free logical replication worker(s) "
                f"(max_logical_replication_workers is {workers['max']}, {workers['used']} in use); "
                f"Replicate needs {needed.workers}: one applies each subscription's changes, one copies",
            )
        )
    origins = await conn.fetchrow(
        # PostgreSQL 18 bounds a subscriber's replication origins on their own; before, max_replication_slots did.
        "SELECT COALESCE(pg_catalog.current_setting('max_active_replication_origins', true), "
        "pg_catalog.current_setting('max_replication_slots'))::int AS max, "
        "(SELECT count(*) FROM pg_catalog.pg_replication_origin_status)::int AS used"
    )
    if origins["max"] - origins["used"] < needed.origins:
        blockers.append(
            Blocker(
                Reason.REPLICATION_UNAVAILABLE,
                f"{origins['max'] - origins['used']} free replication origin(s) (max_active_replication_origins is "
                f"{origins['max']}, {origins['used']} in use); Replicate needs {needed.origins}: one for each "
                "subscription, one for each table copied at a time",
            )
        )
    return blockers


async def _table_blockers(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Blocker]:
    """Tables (``rows``: _TABLES) whose changes cannot be replicated, and triggers that would apply them twice."""
    blockers: list[Blocker] = []
    unidentified = [
        qualify(r["schema"], r["name"])
        for r in rows
        if r["kind"] == "r" and (r["identity"] == "n" or (r["identity"] == "d" and not r["has_key"]))
    ]
    if unidentified:
        blockers.append(
            Blocker(
                Reason.NO_REPLICA_IDENTITY,
                f"table(s) {', '.join(unidentified)} have no primary key, so their updates and deletes cannot be "
                "replicated; add a primary key or run ALTER TABLE ... REPLICA IDENTITY FULL on each",
            )
        )
    firing = await conn.fetch(
        """
        SELECT pg_catalog.format('%I on %I.%I', t.tgname, n.nspname, c.relname) AS trigger
          FROM pg_catalog.pg_trigger t
          JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT t.tgisinternal AND t.tgenabled IN ('A', 'R')
         ORDER BY 1
        """
    )
    if firing:
        # The apply worker runs in replica mode: such a trigger fires again on the new database for every
        # replicated row, and what it writes elsewhere arrives a second time from the source.
        blockers.append(
            Blocker(
                Reason.BLOCKING_DEPENDENT,
                f"trigger(s) {', '.join(r['trigger'] for r in firing)} fire on replicated rows (ENABLE ALWAYS or "
                "ENABLE REPLICA) and would apply their effects twice; set them back to ENABLE, or choose Parallel",
            )
        )
    return blockers


async def _uncarried_blockers(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Blocker]:
    """What logical replication does not carry (``rows``: _TABLES): unlogged tables, matviews, large objects, etc."""
    blockers: list[Blocker] = []
    unlogged = [qualify(r["schema"], r["name"]) for r in rows if r["kind"] == "r" and r["persistence"] == "u"]
    if unlogged:
        blockers.append(
            Blocker(
                Reason.UNSUPPORTED_COLUMN,
                f"unlogged table(s) {', '.join(unlogged)} are not replicated; ALTER TABLE ... SET LOGGED, "
                "or choose InPlace or Parallel",
            )
        )
    matviews = [qualify(r["schema"], r["name"]) for r in rows if r["kind"] == "m"]
    if matviews:
        blockers.append(
            Blocker(
                Reason.BLOCKING_DEPENDENT,
                f"materialized view(s) {', '.join(matviews)} are not replicated and Replicate does not move "
                "them yet; choose InPlace or Parallel",
            )
        )
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata)"):
        blockers.append(
            Blocker(
                Reason.UNSUPPORTED_COLUMN,
                "the database holds large objects, which logical replication does not carry; choose InPlace",
            )
        )
    subscriptions = await conn.fetch(
        "SELECT subname FROM pg_catalog.pg_subscription WHERE subdbid = "
        "(SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())"
    )
    if subscriptions:
        blockers.append(
            Blocker(
                Reason.BLOCKING_DEPENDENT,
                f"the database has subscription(s) {', '.join(r['subname'] for r in subscriptions)}, which the new "
                "database would not continue; choose InPlace or Parallel",
            )
        )
    return blockers


async def name_blockers_on(
    conn: asyncpg.Connection, names: ReplicaNames, migration: str, databases: list[str]
) -> list[Blocker]:
    """The databases' names, taken on the session's server by databases this migration did not make."""
    blockers: list[Blocker] = []
    taken = await conn.fetch(
        "SELECT datname, pg_catalog.shobj_description(oid, 'pg_database') AS comment FROM pg_catalog.pg_database "
        "WHERE datname = ANY($1::text[])",
        databases,
    )
    for row in taken:
        if row["datname"] == names.target and (row["comment"] or "") == names.marker(migration):
            continue  # this migration's own, from an interrupted attempt: made again
        blockers.append(
            Blocker(
                Reason.BLOCKING_DEPENDENT,
                f"database {row['datname']} already exists; drop it, "
                "or name another with spec.replicate.targetDatabase",
            )
        )
    return blockers


async def database_facts(conn: asyncpg.Connection) -> DatabaseFacts:
    """The current database's owner, encoding, locale, comment, settings and privileges."""
    row = await conn.fetchrow(
        """
        SELECT pg_catalog.pg_get_userbyid(d.datdba) AS owner, pg_catalog.pg_encoding_to_char(d.encoding) AS encoding,
               d.datcollate AS collate, d.datctype AS ctype,
               pg_catalog.shobj_description(d.oid, 'pg_database') AS comment
          FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()
        """
    )
    settings = await conn.fetch(
        """
        SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(s.setrole) END AS role,
               pg_catalog.unnest(s.setconfig) AS setting
          FROM pg_catalog.pg_db_role_setting s
         WHERE s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
         ORDER BY 1 NULLS FIRST, 2
        """
    )
    privileges = await conn.fetch(
        """
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee))
               END AS grantee, a.privilege_type, a.is_grantable
          FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a
         WHERE d.datname = pg_catalog.current_database() AND a.grantee <> d.datdba
         ORDER BY 1, 2
        """
    )
    return DatabaseFacts(
        owner=row["owner"],
        encoding=row["encoding"],
        collate=row["collate"],
        ctype=row["ctype"],
        comment=row["comment"],
        settings=tuple((r["role"], r["setting"]) for r in settings),
        grants=tuple(
            f"GRANT {r['privilege_type']} ON DATABASE {{database}} TO {r['grantee']}"
            + (" WITH GRANT OPTION" if r["is_grantable"] else "")
            for r in privileges
        ),
    )


def database_statements(facts: DatabaseFacts, database: str, marker: str) -> list[str]:
    """CREATE DATABASE for the new database as the source is, and its settings, privileges and marker."""
    name = quote_ident(database)
    statements = [
        f"CREATE DATABASE {name} WITH TEMPLATE template0 OWNER {quote_ident(facts.owner)} "
        f"ENCODING {quote_literal(facts.encoding)} LC_COLLATE {quote_literal(facts.collate)} "
        f"LC_CTYPE {quote_literal(facts.ctype)}",
        f"COMMENT ON DATABASE {name} IS {quote_literal(marker)}",
    ]
    for role, setting in facts.settings:
        key, _, value = setting.partition("=")
        guc = ".".join(quote_ident(part) for part in key.split("."))
        prefix = f"ALTER ROLE {quote_ident(role)} IN DATABASE {name}" if role else f"ALTER DATABASE {name}"
        statements.append(f"{prefix} SET {guc} = {setting_value_sql(guc, value)}")
    statements += [grant.format(database=name) for grant in facts.grants]
    return statements
