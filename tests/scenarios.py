"""Databases to migrate, and an independent reading of what they hold.

The reading (`snapshot`) deliberately shares no code with the engine: it parses every vector's
text into Python floats and compares rows by primary key, so an engine bug cannot hide in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from vector_migration.api import VectorMigration, VectorMigrationStatus, parse_manifest
from vector_migration.database.backup import BackupRuntime, LocalBackup
from vector_migration.database.liveness import HeartbeatSettings
from vector_migration.database.sql import APPLICATION_NAME, ConnectionParams
from vector_migration.engine.context import Decisions, Migration, RunInputs, open_session
from vector_migration.engine.runner import step
from vector_migration.vocabulary import Phase

DIMS = 8

# Several tables, every operator class pgvector's HNSW offers, IVFFlat, a partial index, NULL
# vectors, an empty table, identifiers with mixed case, spaces and quotes, a dependent view with
# a grant, and stored pgvector settings.
RICH_SCHEMA = f"""
CREATE EXTENSION vector;
SELECT setseed(0.17);
CREATE FUNCTION pg_temp.v(seed int) RETURNS vector LANGUAGE sql AS $$
  SELECT array_agg(((seed * 31 + d * 17) % 97 / 97.0 + random() * 0.01)::real ORDER BY d)::vector
    FROM generate_series(1, {DIMS}) d $$;

CREATE TABLE items (id int PRIMARY KEY, label text, category text, embedding vector({DIMS}));
INSERT INTO items SELECT i, 'item ' || i, (ARRAY['a','b','c'])[1 + i % 3],
       CASE WHEN i % 17 = 0 THEN NULL ELSE pg_temp.v(i) END FROM generate_series(1, 600) i;
CREATE INDEX items_l2 ON items USING hnsw (embedding vector_l2_ops) WITH (m = 12, ef_construction = 40);
CREATE INDEX items_cosine_ivf ON items USING ivfflat (embedding vector_cosine_ops) WITH (lists = 4);
CREATE INDEX items_ip_partial ON items USING hnsw (embedding vector_ip_ops) WHERE category = 'a';

CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed ""Quoted"" Table" ("Row Id" int PRIMARY KEY, "Embedding Vec" vector({DIMS}),
       "select" text);
INSERT INTO "Odd Schema"."Mixed ""Quoted"" Table" SELECT i, pg_temp.v(i * 3), 'r' || i FROM generate_series(1, 300) i;
CREATE INDEX "L1 Index" ON "Odd Schema"."Mixed ""Quoted"" Table" USING hnsw ("Embedding Vec" vector_l1_ops);

CREATE TABLE empty_vectors (id int PRIMARY KEY, embedding vector({DIMS}));
CREATE INDEX empty_vectors_cosine ON empty_vectors USING hnsw (embedding vector_cosine_ops);

CREATE VIEW category_a AS SELECT id, label, embedding FROM items WHERE category = 'a';
CREATE ROLE vmig_test_reader;
GRANT SELECT ON category_a TO vmig_test_reader;
DROP FUNCTION pg_temp.v(int);
"""

DB_SETTINGS = "ALTER DATABASE {database} SET ivfflat.probes = 4; ALTER DATABASE {database} SET hnsw.ef_search = 80;"


async def create_rich_database(conn: asyncpg.Connection) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'vmig_test_reader'")
    schema = RICH_SCHEMA if not exists else RICH_SCHEMA.replace("CREATE ROLE vmig_test_reader;", "")
    await conn.execute(schema)
    database = await conn.fetchval("SELECT quote_ident(current_database())")
    await conn.execute(DB_SETTINGS.format(database=database))


@dataclass(frozen=True)
class Snapshot:
    """What a user would check by hand: every row's values, the indexes, the extensions, the views."""

    rows: dict[str, dict[Any, tuple[Any, ...]]]
    indexes: dict[str, str]
    extensions: frozenset[str]
    views: dict[str, str]


def parse_vector(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    return tuple(float(x) for x in text.strip("[]").split(","))


VECTOR_TYPE_NAMES = frozenset({"vector", "ruvector", "halfvec", "sparsevec"})


def _is_vector_type(formatted: str) -> bool:
    """Whether format_type() names one vector (not tsvector, not an array of vectors)."""
    base = formatted.split("(")[0].split(".")[-1].strip('"')
    return base in VECTOR_TYPE_NAMES and not formatted.endswith("]")


async def snapshot(conn: asyncpg.Connection) -> Snapshot:
    tables = await conn.fetch(
        """
        SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'vector_migration')
         ORDER BY 2
        """
    )
    rows: dict[str, dict[Any, tuple[Any, ...]]] = {}
    for table in tables:
        columns = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
            "WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            table["oid"],
        )
        select = ", ".join(f"{json.dumps(c['attname'])}::text" for c in columns)
        data = await conn.fetch(f"SELECT {select} FROM {table['name']}")
        vector_positions = {i for i, c in enumerate(columns) if _is_vector_type(c["type"])}
        parsed = {}
        for record in data:
            values = tuple(parse_vector(v) if i in vector_positions else v for i, v in enumerate(record))
            parsed[values[0]] = values
        assert len(parsed) == len(data), f"{table['name']} has duplicate first-column values"
        rows[table["name"]] = parsed
    indexes = {
        r["indexname"]: r["indexdef"]
        for r in await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'vector_migration')"
        )
    }
    extensions = frozenset(r[0] for r in await conn.fetch("SELECT extname FROM pg_extension"))
    views = {
        r["name"]: r["definition"]
        for r in await conn.fetch(
            "SELECT viewname AS name, definition FROM pg_views "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
    }
    return Snapshot(rows, indexes, extensions, views)


async def index_facts(conn: asyncpg.Connection) -> dict[str, tuple[str, str, tuple[str, ...], str | None]]:
    """name -> (access method, operator class, storage options, predicate), from the catalog."""
    rows = await conn.fetch(
        """
        SELECT ic.relname, am.amname, oc.opcname, coalesce(ic.reloptions, '{}') AS options,
               pg_get_expr(i.indpred, i.indrelid) AS predicate
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
          JOIN pg_opclass oc ON oc.oid = i.indclass[0] JOIN pg_namespace n ON n.oid = ic.relnamespace
         WHERE am.amname NOT IN ('btree') AND n.nspname NOT IN ('pg_catalog', 'vector_migration')
        """
    )
    return {r["relname"]: (r["amname"], r["opcname"], tuple(sorted(r["options"])), r["predicate"]) for r in rows}


async def fail_every(conn: asyncpg.Connection, command_tag: str, message: str) -> None:
    """A real failure inside the database: every statement with this command tag raises (an event trigger)."""
    await conn.execute(
        f"""
        CREATE FUNCTION public.injected_failure() RETURNS event_trigger LANGUAGE plpgsql
          AS $$ BEGIN RAISE EXCEPTION '{message}'; END $$;
        CREATE EVENT TRIGGER injected_failure ON ddl_command_end WHEN TAG IN ('{command_tag}')
          EXECUTE FUNCTION public.injected_failure();
        """
    )


DEFAULT_HEARTBEAT = HeartbeatSettings()


def manifest(target: str = "ruvector_standin", **spec: Any) -> VectorMigration:
    document: dict[str, Any] = {
        "apiVersion": "ruvector.dev/v1alpha1",
        "kind": "VectorMigration",
        "metadata": {"name": spec.pop("name", "test-migration")},
        "spec": {"target": {"extension": target}, "verify": {"sampleQueries": 20, "k": 5}, **spec},
    }
    return parse_manifest(document)


def migration(
    params: ConnectionParams,
    resource: VectorMigration,
    backup_dir: Path,
    *,
    scratch: Path | None = None,
    status: VectorMigrationStatus | None = None,
    backup: BackupRuntime | None = None,
    heartbeat: HeartbeatSettings | None = DEFAULT_HEARTBEAT,
    target_server: ConnectionParams | None = None,
    admin: ConnectionParams | None = None,
    **decided: Any,
) -> Migration:
    """A run of the resource against the database; ``decided`` is what a person said (Decisions' fields)."""
    inputs = RunInputs(
        resource.metadata.name,
        resource.spec,
        params,
        backup=backup or LocalBackup(backup_dir),
        **({"scratch": scratch} if scratch is not None else {}),
        heartbeat=heartbeat,
        target_server=target_server,
        admin_params=admin,
    )
    return Migration(inputs, Decisions(**decided), status or VectorMigrationStatus())


def condition(status: Any, kind: str) -> Any:
    return next((c for c in status.conditions if c.type == kind), None)


async def step_until(m: Migration, phase: Phase) -> None:
    """Open the run's session and step it until it reaches ``phase`` (where a test cuts it off)."""
    assert await open_session(m) is None
    while m.status.phase is not phase:
        await step(m)


# Every DDL command the migration's sessions run, as PostgreSQL saw it (the probe's rolled-back
# CREATE EXTENSION leaves no row: the recording rolls back with it).
RECORDER = f"""
CREATE TABLE public.ddl_seen (seq bigserial PRIMARY KEY, tag text, query text);
CREATE FUNCTION public.record_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('application_name') = '{APPLICATION_NAME}' THEN
    INSERT INTO public.ddl_seen (tag, query) VALUES (tg_tag, current_query());
  END IF;
END $$;
CREATE EVENT TRIGGER record_ddl ON ddl_command_end EXECUTE FUNCTION public.record_ddl();
"""
# The engine's own bookkeeping, which no plan is about.
JOURNAL_DDL = ("CREATE SCHEMA IF NOT EXISTS", "CREATE TABLE IF NOT EXISTS", 'COMMENT ON TABLE "vector_migration"')


def normalized(sql: str) -> str:
    return " ".join(sql.split())
