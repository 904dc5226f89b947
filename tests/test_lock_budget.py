"""The checklist predicts the swap's locks: a schema whose tables do not fit the lock table is refused before anything
changes, and the prediction is checked against the locks PostgreSQL's own lock table holds during real InPlace swaps
and a real Parallel migration (an event trigger records pg_locks inside their transactions).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import manifest, migration
from tests.servers import new_database, restart_with
from vector_migration.database.locks import CATALOG_AND_TARGET_LOCKS, extension_members, lock_table, relations_locked
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

INPLACE = {"backup": {"enabled": False}}


def tenants(count: int) -> str:
    """One table per tenant, as a schema-per-tenant application makes them: a key, a vector and its index."""
    return "CREATE EXTENSION vector;" + "".join(
        f"CREATE TABLE tenant_{i} (id int PRIMARY KEY, embedding vector(3));"
        f"INSERT INTO tenant_{i} VALUES (1, '[1,2,3]'), (2, '[3,2,1]');"
        f"CREATE INDEX tenant_{i}_embedding ON tenant_{i} USING hnsw (embedding vector_l2_ops);"
        for i in range(count)
    )


@pytest.fixture(scope="module")
def small_lock_table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A server whose lock table has 10 x 20 = 200 slots (the default is 64 x 100)."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("small-locks") / "data")
    restart_with(server, {"max_locks_per_transaction": "10", "max_connections": "20"})
    yield server
    server.stop()


STRATEGIES = {
    "InPlace": INPLACE,
    "Rebuild": {"strategy": "Rebuild"},  # its backup is required; the checklist refuses before it
    "Parallel": {"strategy": "Parallel", "backup": {"enabled": False}, "parallel": {"keepOldFor": "0s"}},
}


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_schema_whose_swap_would_run_out_of_locks_is_refused_before_anything_changes(
    small_lock_table: EmbeddedPostgres, backup_dir: Path, strategy: str
) -> None:
    shop, conn = await new_database(small_lock_table, f"tenants_{strategy.lower()}")
    try:
        await conn.execute(tenants(40))

        status = await run(migration(shop, manifest(**STRATEGIES[strategy]), backup_dir))

        assert status.phase is Phase.FAILED
        stalled = next(c for c in status.conditions if c.type == "Stalled")
        assert stalled.reason == Reason.LOCK_TABLE_TOO_SMALL.value
        assert "max_locks_per_transaction 10 x 20" in status.message and "= 200 slots" in status.message
        assert "Set max_locks_per_transaction to at least" in status.message and "restart" in status.message
        column = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'tenant_0'::regclass"
        assert await conn.fetchval(column + " AND attname = 'embedding'") == "vector(3)"
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 1
    finally:
        await conn.close()


# Inside the swap's transaction, after each DDL command: the locks its session holds in the shared lock table.
LOCKS_SEEN = """
CREATE TABLE public.locks_seen (held int);
CREATE TABLE public.locks_detail (locktype text, class text, mode text, n bigint);
CREATE FUNCTION public.count_locks() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.locks_seen SELECT count(*) FROM pg_catalog.pg_locks
   WHERE pid = pg_catalog.pg_backend_pid() AND NOT fastpath AND locktype IN ('relation', 'object');
  IF (SELECT count(*) FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid() AND NOT fastpath)
     < (SELECT max(held) FROM public.locks_seen) THEN RETURN; END IF;
  DELETE FROM public.locks_detail;
  INSERT INTO public.locks_detail SELECT locktype, classid::regclass::text, mode, count(*) FROM pg_catalog.pg_locks
   WHERE pid = pg_catalog.pg_backend_pid() AND NOT fastpath GROUP BY 1, 2, 3;
END $$;
CREATE EVENT TRIGGER count_locks ON ddl_command_end EXECUTE FUNCTION public.count_locks();
"""


@pytest.mark.parametrize("count", [12, 48])
async def test_the_prediction_is_not_below_what_a_real_swap_holds(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path, count: int
) -> None:
    await conn.execute(tenants(count))
    await conn.execute("CREATE VIEW tenant_0_near AS SELECT id FROM tenant_0 ORDER BY embedding <-> '[1,1,1]' LIMIT 5")
    tables = [("public", f"tenant_{i}") for i in range(count)]

    # the tables, their keys and vector indexes at least
    await the_prediction_covers_the_swap(database, conn, backup_dir, tables, at_least=count * 3)


async def the_prediction_covers_the_swap(
    database: ConnectionParams,
    conn: asyncpg.Connection,
    backup_dir: Path,
    relations: list[tuple[str, str]],
    *,
    at_least: int,
) -> None:
    """An InPlace migration with pg_locks recorded inside its swap: the checklist's model never below, at most 1.5x."""
    predicted = (
        await relations_locked(conn, relations) + await extension_members(conn, "vector") + CATALOG_AND_TARGET_LOCKS
    )
    await conn.execute(LOCKS_SEEN)

    status = await run(migration(database, manifest(**INPLACE), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    held = await conn.fetchval("SELECT max(held) FROM public.locks_seen")
    detail = [tuple(r) for r in await conn.fetch("SELECT * FROM public.locks_detail ORDER BY n DESC")]
    assert held is not None and held > at_least
    assert predicted >= held, f"predicted {predicted} locks, the swap held {held}: {detail}"
    assert predicted <= 1.5 * held, f"predicted {predicted} locks, the swap held only {held}: {detail}"
    assert (await lock_table(conn)).slots >= 64 * 100


async def test_the_parallel_prediction_is_not_below_what_its_transactions_hold(  # 960 predicted, 573 held
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await conn.execute(tenants(24))
    tables = [("public", f"tenant_{i}") for i in range(24)]
    await conn.execute(LOCKS_SEEN)

    status = await run(migration(database, manifest(**STRATEGIES["Parallel"]), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    held = await conn.fetchval("SELECT max(held) FROM public.locks_seen")
    detail = [tuple(r) for r in await conn.fetch("SELECT * FROM public.locks_detail ORDER BY n DESC")]
    predicted = 2 * await relations_locked(conn, tables)
    assert predicted >= held, f"predicted {predicted} locks, Parallel held {held}: {detail}"
    assert predicted <= 2 * held, f"predicted {predicted} locks, Parallel held only {held}: {detail}"


def tenant_partitions(count: int) -> str:
    """One partition per tenant of one table, with the vector index on the parent (so one per partition)."""
    return (
        "CREATE EXTENSION vector;"
        "CREATE TABLE docs (tenant int, id int, embedding vector(3), PRIMARY KEY (tenant, id))"
        " PARTITION BY LIST (tenant);"
        + "".join(f"CREATE TABLE docs_{i} PARTITION OF docs FOR VALUES IN ({i});" for i in range(count))
        + "INSERT INTO docs SELECT t, i, ARRAY[t, i, 1]::real[]::vector FROM generate_series(0, "
        + f"{count - 1}) t, generate_series(1, 2) i;"
        "CREATE INDEX docs_embedding ON docs USING hnsw (embedding vector_l2_ops);"
    )


async def test_a_partitioned_tables_partitions_count_in_the_prediction(
    small_lock_table: EmbeddedPostgres, backup_dir: Path
) -> None:
    # One table to migrate, but ALTER TABLE on it locks and alters each of its 40 partitions too.
    shop, conn = await new_database(small_lock_table, "partitioned_tenants")
    try:
        await conn.execute(tenant_partitions(40))

        status = await run(migration(shop, manifest(**INPLACE), backup_dir))

        assert status.phase is Phase.FAILED
        assert next(c for c in status.conditions if c.type == "Stalled").reason == Reason.LOCK_TABLE_TOO_SMALL.value
        column = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs_7'::regclass"
        assert await conn.fetchval(column + " AND attname = 'embedding'") == "vector(3)"
    finally:
        await conn.close()


async def test_the_prediction_is_not_below_what_a_real_swap_of_a_partitioned_table_holds(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await conn.execute(tenant_partitions(24))
    relations = [("public", "docs")] + [("public", f"docs_{i}") for i in range(24)]

    # each partition, its key and its vector index at least
    await the_prediction_covers_the_swap(database, conn, backup_dir, relations, at_least=24 * 3)


@pytest.fixture(scope="module")
def small_logical_lock_table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A logical-replication server with 25 x 30 = 750 lock slots: pgvector's DROP EXTENSION alone takes 375."""
    from tests.replication import make_logical

    server = EmbeddedPostgres(tmp_path_factory.mktemp("small-logical") / "data")
    make_logical(server)
    restart_with(server, {"max_locks_per_transaction": "25", "max_connections": "30"})
    yield server
    server.stop()


async def test_replicate_builds_the_new_database_in_steps_where_one_transaction_would_not_fit(
    small_logical_lock_table: EmbeddedPostgres, backup_dir: Path
) -> None:
    # 40 tables do not fit one transaction here; the new database has no application, so Replicate
    # restores its schema and converts it a statement at a time.
    from tests.replication import REPLICATE

    shop, conn = await new_database(small_logical_lock_table, "tenants_replicate")
    try:
        await conn.execute(tenants(40))
        before = await conn.fetch("SELECT id, embedding::text FROM tenant_39 ORDER BY id")
    finally:
        await conn.close()
    refused = await run(migration(shop, manifest(**INPLACE), backup_dir))
    assert refused.phase is Phase.FAILED and "or use strategy Replicate" in refused.message, refused.message

    spec = {**REPLICATE, "replicate": {"keepOldFor": "0s"}}
    status = await run(migration(shop, manifest(**spec), backup_dir), reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    catalog = status.verification.catalog if status.verification else None
    assert catalog is not None and not catalog.differences, catalog
    conn = await asyncpg.connect(host=shop.host, port=shop.port, user=shop.user, database=shop.dbname)
    try:
        column = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'tenant_39'::regclass"
        assert await conn.fetchval(column + " AND attname = 'embedding'") == "ruvector(3)"
        assert await conn.fetch("SELECT id, embedding::text FROM tenant_39 ORDER BY id") == before
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 0
    finally:
        await conn.close()
