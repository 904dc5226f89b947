"""The Replicate strategy: a new database fed by logical replication, switched in under the application's name.

Each scenario runs on a server of its own with wal_level = logical: the application writes through
the copy and the switchover, a rollback turns the names back, an interrupted run continues, and
nothing (no slot, no database) is left behind that nobody consumes.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.application import application_writing, create_shop, docs_before, final_equals_every_committed_change
from tests.replication import REPLICATE, extensions, server_state, session, shop_on, stop_at
from tests.scenarios import condition, manifest, migration
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.context import close_session
from vector_migration.engine.runner import drive, run
from vector_migration.vocabulary import Phase

EMBEDDING_TYPE = (
    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
    "WHERE attrelid = 'docs'::regclass AND attname = 'embedding'"
)


@pytest.fixture
async def shop(logical_server: EmbeddedPostgres) -> ConnectionParams:
    return await shop_on(logical_server)


@pytest.mark.parametrize("target", ["ruvector_standin", "ruvector_script_standin", "ruvector_v2_standin"])
async def test_the_application_writes_through_copy_and_switchover_and_loses_nothing(
    shop: ConnectionParams, backup_dir: Path, target: str
) -> None:
    # Arrange: the shop, and an application writing (a pool that reconnects) for the whole run.
    conn = await session(shop)
    before = await docs_before(conn)
    await conn.close()
    m = migration(shop, manifest(target, **REPLICATE), backup_dir)
    # Act
    async with application_writing(shop, reconnect=True) as committed:
        status = await run(m, reconnect_for=30)
    # Assert: the application's database name now holds the migrated data, every committed change once.
    assert status.phase is Phase.SUCCEEDED, status.message
    assert committed[0] > 0
    assert committed[1] >= 1  # the switchover ended the application's session while it was writing
    assert "vector" not in await extensions(shop) and target in await extensions(shop)
    conn = await session(shop)
    try:
        if target != "ruvector_v2_standin":  # the v2 plan's type is also called vector
            assert (await conn.fetchval(EMBEDDING_TYPE)).startswith("ruvector")
        await final_equals_every_committed_change(conn, before)
        # sequences carried: the application's next insert does not collide
        await conn.execute("INSERT INTO changes (op) VALUES ('after')")
    finally:
        await conn.close()
    old = f"{shop.dbname}_pgvector_old"
    assert "vector" in await extensions(shop, old)
    slot_names, databases = await server_state(shop)
    assert old in databases and f"{shop.dbname}_{target}" not in databases
    assert len(slot_names) == 1 and slot_names[0].endswith("_back")  # the old database follows the new one
    replicate = status.replicate
    assert replicate is not None and replicate.switched_over and replicate.reverse_replication
    assert replicate.switchover_seconds is not None and replicate.switchover_seconds < 10
    assert status.verification is not None and status.verification.tables
    assert all(t.checksum_before == t.checksum_after for t in status.verification.tables)
    assert condition(status, "Ready").status == "True"


async def test_a_rollback_after_the_switchover_keeps_every_write_made_on_the_new_database(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    resource = manifest(**REPLICATE)
    status = await run(migration(shop, resource, backup_dir), reconnect_for=30)
    assert status.phase is Phase.SUCCEEDED, status.message
    conn = await session(shop)
    await conn.execute("INSERT INTO docs (category, title, embedding) SELECT 1, 'after', embedding FROM docs LIMIT 3")
    rows = await conn.fetchval("SELECT count(*) FROM docs")
    await conn.close()

    rolled = await run(migration(shop, resource, backup_dir, status=status, rollback=True), reconnect_for=30)

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    assert "vector" in await extensions(shop)
    conn = await session(shop)
    try:
        assert await conn.fetchval("SELECT count(*) FROM docs") == rows
        assert await conn.fetchval("SELECT count(*) FROM docs WHERE title = 'after'") == 3
        assert await conn.fetchval(EMBEDDING_TYPE) == "vector(8)"
    finally:
        await conn.close()
    slot_names, databases = await server_state(shop)
    assert slot_names == []
    assert f"{shop.dbname}_ruvector_standin" not in databases and f"{shop.dbname}_pgvector_old" not in databases


async def test_an_abort_before_the_switchover_drops_the_new_database_and_leaves_no_slot(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    resource = manifest(**REPLICATE)
    m = migration(shop, resource, backup_dir)
    await drive(m, stop=stop_at(Phase.VERIFY))
    await close_session(m)
    assert m.status.phase is Phase.VERIFY
    assert len((await server_state(shop))[0]) == 1  # the subscription's slot

    rolled = await run(migration(shop, resource, backup_dir, status=m.status, rollback=True))

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    slot_names, databases = await server_state(shop)
    assert slot_names == [] and f"{shop.dbname}_ruvector_standin" not in databases
    assert "vector" in await extensions(shop)
    conn = await session(shop)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_publication") == 0
    finally:
        await conn.close()


async def test_a_run_cut_off_during_the_copy_is_continued_by_the_next_one(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    resource = manifest(**REPLICATE)
    first = migration(shop, resource, backup_dir)
    await drive(first, stop=stop_at(Phase.BACKFILL))
    assert first.status.phase is Phase.BACKFILL
    await close_session(first)  # the process ends: its session (and the migration lock) with it

    status = await run(migration(shop, resource, backup_dir), reconnect_for=30)  # a new process: no status, no facts

    assert status.phase is Phase.SUCCEEDED, status.message
    assert "vector" not in await extensions(shop)


async def test_a_switchover_cut_off_with_the_database_closed_opens_it_again(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    resource = manifest(**REPLICATE)
    first = migration(shop, resource, backup_dir)
    await drive(first, stop=stop_at(Phase.FINALIZE))
    await close_session(first)
    admin = await session(shop, "postgres")
    await admin.execute(
        f'ALTER DATABASE "{shop.dbname}" ALLOW_CONNECTIONS false'
    )  # as a crash under the block leaves it
    await admin.close()

    status = await run(migration(shop, resource, backup_dir, status=first.status), reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    assert "vector" not in await extensions(shop)


async def test_after_keep_old_for_replication_stops_and_the_old_database_goes_when_asked(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    resource = manifest(**{**REPLICATE, "replicate": {"keepOldFor": "0s", "dropOld": True}})
    status = await run(migration(shop, resource, backup_dir), reconnect_for=30)
    assert status.phase is Phase.SUCCEEDED, status.message

    again = await run(migration(shop, resource, backup_dir))

    assert again.phase is Phase.SUCCEEDED
    assert "replication into" in again.message and "dropped" in again.message
    slot_names, databases = await server_state(shop)
    assert slot_names == [] and f"{shop.dbname}_pgvector_old" not in databases
    assert again.replicate is not None and again.replicate.replication_stopped


async def test_the_checklist_names_everything_replication_needs_at_once(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    # Arrange: the default server (wal_level = replica), a table without a key, a materialized view.
    await create_shop(conn)
    await conn.execute("CREATE TABLE audit (at timestamptz, what text)")
    await conn.execute("CREATE MATERIALIZED VIEW doc_titles AS SELECT title FROM docs")
    await conn.execute(
        "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; "
        "CREATE TRIGGER docs_audit AFTER INSERT ON docs FOR EACH ROW EXECUTE FUNCTION audit(); "
        "ALTER TABLE docs ENABLE ALWAYS TRIGGER docs_audit"
    )

    status = await run(migration(database, manifest(**REPLICATE), backup_dir))

    assert status.phase is Phase.FAILED
    assert "wal_level is replica" in status.message
    assert '"public"."audit"' in status.message and "REPLICA IDENTITY FULL" in status.message
    assert '"public"."doc_titles"' in status.message
    assert "docs_audit on public.docs fire on replicated rows" in status.message
    assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname LIKE $1", f"{database.dbname}_%") == 0


async def test_the_operator_runs_a_replicate_migration_on_the_api_emulator(
    logical_server: EmbeddedPostgres, shop: ConnectionParams, tmp_path: Path
) -> None:
    from tests.chart import assert_allowed_by_the_chart
    from tests.cluster import condition as resource_condition
    from tests.cluster import phase, running_cluster, running_operator
    from tests.test_operator import migration as resource
    from tests.test_operator import secret_for

    async with (
        running_cluster(tmp_path, logical_server.bin_dir) as (cluster, runner),
        running_operator(cluster),
    ):
        await cluster.apply_secret("shop-app", {**secret_for(shop), "port": str(shop.port)})
        await cluster.apply(resource(**REPLICATE))

        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), timeout=120)

        assert phase(done) == "Succeeded", done["status"]["message"]
        for kind in ("Ready", "ReplicaSynced", "IndexesRebuilt", "Finalized", "Verified"):
            assert resource_condition(done, kind)["status"] == "True", kind
        replicate = done["status"]["replicate"]
        assert replicate["switchedOver"] and replicate["switchoverSeconds"] < 10
        assert [name.rsplit("-", 1)[0] for name in runner.started] == ["shop-schema"]  # the schema copy ran as a Job
        assert_allowed_by_the_chart(cluster.operator_requests())
    assert "vector" not in await extensions(shop) and "vector" in await extensions(shop, f"{shop.dbname}_pgvector_old")


async def test_cutover_steps_weigh_reads_onto_the_new_database_before_the_switchover(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    steps = {"cutover": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}]}}
    resource = manifest(**REPLICATE, **steps)

    held = await run(migration(shop, resource, backup_dir))

    assert held.phase is Phase.CUTOVER, held.message
    assert held.cutover is not None and held.cutover.weight == 25
    assert "reads on the new database" in held.message
    assert "vector" in await extensions(shop)  # not switched yet: the application is on the source
    promoted = await run(migration(shop, resource, backup_dir, status=held, promote=True), reconnect_for=30)
    assert promoted.phase is Phase.SUCCEEDED, promoted.message
    assert promoted.cutover is not None and promoted.cutover.weight == 100
    assert "vector" not in await extensions(shop)


class CutOff(BaseException):
    """The process ending between two statements (what a kill does to the run)."""


async def test_a_run_cut_off_while_converting_the_new_database_makes_it_again(
    shop: ConnectionParams, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The new database converts a statement at a time: one cut off halfway is half converted, and
    # the next run must not take it for done (nor for a copy of the source). It makes it again.
    from vector_migration.strategies.replicate import prepare

    executed: list[str] = []

    async def cut_off_at_the_third(there: object, statement: object) -> None:
        executed.append(str(statement))
        if len(executed) == 3:
            raise CutOff
        await real(there, statement)  # type: ignore[arg-type]

    real = prepare.execute
    monkeypatch.setattr(prepare, "execute", cut_off_at_the_third)
    resource = manifest(**REPLICATE)
    first = migration(shop, resource, backup_dir)
    with pytest.raises(CutOff):
        await drive(first)
    await close_session(first)
    monkeypatch.setattr(prepare, "execute", real)

    status = await run(migration(shop, resource, backup_dir), reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    assert "vector" not in await extensions(shop)
    catalog = status.verification.catalog if status.verification else None
    assert catalog is not None and not catalog.differences, catalog
