"""InPlace in batches (inPlace.tablesPerBatch): many tables on a small lock table, a crash between batches, a
failing batch, and the refusals where batches cannot keep the application working.

The server's lock table has 25 x 40 = 1,000 slots, where 40 tenant tables do not fit one transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import fail_every, manifest, migration
from tests.servers import new_database, restart_with
from tests.test_command_line import MANIFEST, url, write
from tests.test_lock_budget import tenants
from vector_migration.cli import main
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine import records
from vector_migration.engine.context import Migration
from vector_migration.engine.runner import run
from vector_migration.strategies.in_place.recorded import batches_recorded
from vector_migration.vocabulary import Phase, Reason

# Five rows a table: an index's latency is noise against the control query's, and not what is proven here.
BATCHED = {
    "backup": {"enabled": False},
    "inPlace": {"tablesPerBatch": 5},
    "verify": {"sampleQueries": 20, "k": 5, "latency": {"enforce": "Warn"}},
}
COLUMN_TYPES = """
SELECT c.relname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relname LIKE 'tenant\\_%' AND c.relkind = 'r' AND a.attname = 'embedding'
"""


@pytest.fixture(scope="module")
def small_lock_table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("batches") / "data")
    restart_with(server, {"max_locks_per_transaction": "25", "max_connections": "40"})
    yield server
    server.stop()


async def types_of(conn: asyncpg.Connection) -> dict[str, str]:
    return {name: kind for name, kind in await conn.fetch(COLUMN_TYPES)}


async def test_forty_tables_that_do_not_fit_one_transaction_migrate_five_to_a_transaction(
    small_lock_table: EmbeddedPostgres, backup_dir: Path
) -> None:
    shop, conn = await new_database(small_lock_table, "tenants_batched")
    try:
        await conn.execute(tenants(40))
        before = await conn.fetch("SELECT id, embedding::text FROM tenant_39 ORDER BY id")
        refused = await run(migration(shop, manifest(backup={"enabled": False}), backup_dir))
        assert refused.phase is Phase.FAILED
        assert "or set inPlace.tablesPerBatch" in refused.message, refused.message

        status = await run(migration(shop, manifest(**BATCHED), backup_dir))

        assert status.phase is Phase.SUCCEEDED, status.message
        assert set((await types_of(conn)).values()) == {"ruvector(3)"}
        assert await conn.fetch("SELECT id, embedding::text FROM tenant_39 ORDER BY id") == before
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 0
        assert status.verification is not None and len(status.verification.tables) == 40
        assert all(t.checksum_after == t.checksum_before for t in status.verification.tables)
        catalog = status.verification.catalog
        assert catalog is not None and not catalog.differences, catalog
        assert any(
            "8 batch(es) of at most 5 table(s) converted to ruvector_standin, then vector dropped" in c.message
            for c in status.conditions
        ), status.conditions
        record = batches_recorded(await records.read(conn, "test-migration"))
        assert record is not None and record.committed == len(record.batches) == 9  # and the drop of pgvector
    finally:
        await conn.close()


# Every ALTER TABLE the migrations make, with the transaction that made it: a witness of the batches.
NOTE_ALTERS = """
CREATE TABLE public.altered (tag text, xid bigint);
CREATE FUNCTION public.note_alter() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.altered SELECT object_identity, pg_catalog.txid_current()
        FROM pg_catalog.pg_event_trigger_ddl_commands() WHERE command_tag = 'ALTER TABLE'; END $$;
CREATE EVENT TRIGGER note_alter ON ddl_command_end EXECUTE FUNCTION public.note_alter();
"""


async def test_a_batched_migration_is_rolled_back_a_batch_to_a_transaction(
    small_lock_table: EmbeddedPostgres, backup_dir: Path
) -> None:
    shop, conn = await new_database(small_lock_table, "tenants_back")
    try:
        await conn.execute(tenants(40))
        await conn.execute(NOTE_ALTERS)
        before = await conn.fetch("SELECT id, embedding::text FROM tenant_39 ORDER BY id")
        indexes = "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'tenant%' ORDER BY 1"
        indexes_before = await conn.fetch(indexes)
        migrated = await run(migration(shop, manifest(**BATCHED), backup_dir))
        assert migrated.phase is Phase.SUCCEEDED, migrated.message

        status = await run(migration(shop, manifest(**BATCHED), backup_dir, status=migrated, rollback=True))

        assert status.phase is Phase.ROLLED_BACK, status.message
        transactions = await conn.fetchval("SELECT count(DISTINCT xid) FROM altered")
        assert transactions == 16, "forward and back, eight transactions of five tables each way"
        assert await conn.fetchval("SELECT count(*) FROM altered") == 80
        assert "40 table(s) converted back with checksums equal, 40 original index(es) recreated" in status.message
        assert "every table equals its pre-migration checksum" in status.message
        assert set((await types_of(conn)).values()) == {"vector(3)"}
        assert await conn.fetch("SELECT id, embedding::text FROM tenant_39 ORDER BY id") == before
        assert await conn.fetch(indexes) == indexes_before
        extensions = await conn.fetch("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'")
        assert [row["extname"] for row in extensions] == ["vector"]
    finally:
        await conn.close()


class Killed(BaseException):
    """The process stops where it is, as with SIGKILL: no handler runs, the open transaction is lost."""


class KilledAtBatch:
    """A reporter whose process is killed as the given batch (from 0) begins."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def phase_started(self, phase: Phase) -> None:
        pass

    def progress(self, task: str, done: int | None = None, total: int | None = None, note: str = "") -> None:
        if task == "batches" and done == self.batch:
            raise Killed

    def task_done(self, task: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass


def killed_at(m: Migration, batch: int) -> Migration:
    return Migration(dataclasses.replace(m.inputs, reporter=KilledAtBatch(batch)), m.decisions, m.status)


async def test_a_run_killed_between_batches_continues_at_the_next_batch(
    small_lock_table: EmbeddedPostgres, backup_dir: Path
) -> None:
    shop, conn = await new_database(small_lock_table, "tenants_killed")
    try:
        await conn.execute(tenants(40))
        await conn.execute(NOTE_ALTERS)
        with pytest.raises(Killed):
            await run(killed_at(migration(shop, manifest(**BATCHED), backup_dir), 3))

        types = await types_of(conn)
        assert sorted(name for name, kind in types.items() if kind == "ruvector(3)") == sorted(
            f"tenant_{i}" for i in (0, 1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 2, 20, 21)
        )  # three batches of the tables in name order
        record = batches_recorded(await records.read(conn, "test-migration"))
        assert record is not None and record.committed == 3

        status = await run(migration(shop, manifest(**BATCHED), backup_dir))

        assert status.phase is Phase.SUCCEEDED, status.message
        assert set((await types_of(conn)).values()) == {"ruvector(3)"}
        altered = [row["tag"] for row in await conn.fetch("SELECT tag FROM altered")]
        assert len(altered) == len(set(altered)) == 40, "each table converted once"
        assert status.verification is not None and len(status.verification.tables) == 40
    finally:
        await conn.close()


async def test_a_failing_batch_after_others_committed_converts_them_back(
    small_lock_table: EmbeddedPostgres, backup_dir: Path
) -> None:
    shop, conn = await new_database(small_lock_table, "tenants_failing")
    try:
        await conn.execute(tenants(40))
        before = {row["id"]: row["embedding"] for row in await conn.fetch("SELECT id, embedding::text FROM tenant_0")}
        await conn.execute(
            """
            CREATE FUNCTION public.refuse_tenant_30() RETURNS event_trigger LANGUAGE plpgsql AS $$
            BEGIN IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.tenant_30')
                  THEN RAISE EXCEPTION 'tenant_30 may not change'; END IF; END $$;
            CREATE EVENT TRIGGER refuse_tenant_30 ON ddl_command_end EXECUTE FUNCTION public.refuse_tenant_30();
            """
        )

        status = await run(migration(shop, manifest(**BATCHED), backup_dir))

        assert status.phase is Phase.ROLLED_BACK, status.message
        assert "tenant_30 may not change" in status.message and "batch(es) before it had committed" in status.message
        assert set((await types_of(conn)).values()) == {"vector(3)"}
        assert {r["id"]: r["embedding"] for r in await conn.fetch("SELECT id, embedding::text FROM tenant_0")} == before
        indexes = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%'")
        assert indexes == 40
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'ruvector_standin'") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("target", ["ruvector_script_standin", "ruvector_v2_standin"])  # hnsw, or every name
async def test_batches_are_refused_where_the_targets_names_collide(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path, target: str
) -> None:
    await conn.execute(tenants(3))

    status = await run(migration(database, manifest(target, **BATCHED), backup_dir))

    assert status.phase is Phase.FAILED
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert stalled.reason == Reason.CANNOT_BATCH.value
    assert "names collide" in status.message and "strategy Replicate" in status.message
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 1


async def test_batches_are_refused_where_a_view_names_the_vector_type(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await conn.execute(tenants(3))
    await conn.execute(
        "CREATE VIEW nearest AS SELECT id, embedding FROM tenant_0 UNION ALL SELECT id, embedding FROM tenant_2"
    )

    status = await run(migration(database, manifest(**BATCHED), backup_dir))

    assert status.phase is Phase.FAILED
    assert "view public.nearest" in status.message, status.message
    assert (await types_of(conn))["tenant_0"] == "vector(3)"


def test_the_spec_refuses_batches_for_another_strategy() -> None:
    with pytest.raises(ValueError, match=r"inPlace\.tablesPerBatch requires strategy: InPlace"):
        manifest(strategy="Rebuild", inPlace={"tablesPerBatch": 5})


async def test_a_failure_in_the_first_batch_changes_nothing(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await conn.execute(tenants(7))
    await fail_every(conn, "ALTER TABLE", "no table may change")

    status = await run(migration(database, manifest(**BATCHED), backup_dir))

    assert status.phase is Phase.FAILED
    assert "no table may change" in status.message
    assert set((await types_of(conn)).values()) == {"vector(3)"}
    assert batches_recorded(await records.read(conn, "test-migration")) is None


async def test_the_plan_shows_each_batch_and_what_the_application_sees_between_them(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await conn.execute(tenants(7))
    document = {**MANIFEST, "spec": {**MANIFEST["spec"], **BATCHED, "inPlace": {"tablesPerBatch": 3}}}

    code = await asyncio.to_thread(
        main, ["plan", "-f", str(write(tmp_path, document)), "--database-url", url(database)]
    )

    assert code == 0
    shown = " ".join(capsys.readouterr().out.split())  # as wide as the terminal
    assert "Batch 1 of 4 (one transaction): public.tenant_0, public.tenant_1, public.tenant_2" in shown
    assert "Batch 3 of 4 (one transaction): public.tenant_6:" in shown
    assert "Batch 4 of 4 (one transaction): the source dropped" in shown
    assert 'DROP EXTENSION "vector" RESTRICT' in shown.split("Batch 4 of 4")[1]
    assert "In one transaction" not in shown
    assert "between batches the application sees the converted tables on the target's type" in shown
    assert (await types_of(conn))["tenant_0"] == "vector(3)"
