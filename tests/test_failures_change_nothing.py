"""Every way a migration can stop before or during the swap leaves the database exactly as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import condition, create_rich_database, fail_every, manifest, migration, snapshot
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.runner import run
from vector_migration.vocabulary import ADVISORY_LOCK_KEY, Phase, Reason


async def no_sleep(_: float) -> None:
    return None


async def test_a_failure_in_the_middle_of_the_swap_rolls_everything_back(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    # A real failure inside the swap transaction, after every column has been converted and
    # pgvector dropped: the first target index build raises.
    await fail_every(conn, "CREATE INDEX", "injected failure while building an index")
    before = await snapshot(conn)

    status = await run(migration(database, manifest(), backup_dir))

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").status == "True"
    assert condition(status, "Stalled").reason == Reason.SWAP_FAILED
    assert "build-index failed" in status.message and "injected failure" in status.message
    assert "rolled back, nothing changed" in status.message
    assert await snapshot(conn) == before
    assert await conn.fetchval("SELECT to_regclass('vector_migration.journal')") is None

    # Once the cause is gone, the same migration runs from the start and succeeds.
    await conn.execute("DROP EVENT TRIGGER injected_failure")
    status = await run(migration(database, manifest(), backup_dir))
    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows


async def test_a_missing_target_extension_stops_the_checklist(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    status = await run(migration(database, manifest("ruvector_not_installed"), backup_dir))

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.TARGET_EXTENSION_UNAVAILABLE
    assert "ruvector_not_installed is not available on this server" in status.message
    assert await snapshot(conn) == before
    assert not backup_dir.exists()


async def test_a_column_the_target_cannot_hold_is_named(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    await conn.execute(
        "CREATE TABLE half (id int PRIMARY KEY, small halfvec(4)); INSERT INTO half VALUES (1, '[1,2,3,4]')"
    )
    before = await snapshot(conn)

    status = await run(migration(database, manifest(), backup_dir))

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.UNSUPPORTED_COLUMN
    assert "public.half.small is halfvec" in status.message
    assert await snapshot(conn) == before


async def test_an_object_that_cannot_follow_the_type_stops_the_checklist(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    await conn.execute("CREATE DOMAIN public.embedding_8 AS vector(8)")
    before = await snapshot(conn)

    status = await run(migration(database, manifest(), backup_dir))

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.BLOCKING_DEPENDENT
    assert "type public.embedding_8 depends on extension vector" in status.message
    assert await snapshot(conn) == before


async def test_a_partial_table_selection_is_refused_because_pgvector_must_go(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)

    status = await run(migration(database, manifest(tables=[{"name": "public.items"}]), backup_dir))

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.INCOMPLETE_SELECTION
    assert 'leaves out Odd Schema.Mixed "Quoted" Table.Embedding Vec, public.empty_vectors.embedding' in status.message


async def test_a_second_migration_on_the_same_database_is_refused(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)  # what a running migration holds

    status = await run(
        migration(database, manifest(name="second"), backup_dir), give_up_on=frozenset({Reason.MIGRATION_LOCKED})
    )

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.MIGRATION_LOCKED
    assert "another migration is running" in status.message
    assert str(await conn.fetchval("SELECT pg_backend_pid()")) in status.message
    assert await snapshot(conn) == before


async def test_a_locked_table_makes_the_swap_wait_then_give_up_cleanly(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    app = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    try:
        # An application transaction holding a row lock on a vector table, as a long write would.
        transaction = app.transaction()
        await transaction.start()
        await app.execute("UPDATE items SET label = label WHERE id = 1")
        resource = manifest(lockTimeout="200ms", backup={"enabled": False})

        status = await run(migration(database, resource, backup_dir), max_waits=2, sleep=no_sleep)

        await transaction.rollback()
    finally:
        await app.close()
    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.LOCK_TIMEOUT
    assert "gave up after 3 attempts" in status.message and "lockTimeout (200ms)" in status.message
    assert await snapshot(conn) == before


async def test_the_swap_waits_for_a_short_application_transaction(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    app = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    transaction = app.transaction()
    await transaction.start()
    await app.execute("UPDATE items SET label = 'written by the app' WHERE id = 2")
    waits: list[float] = []

    async def release_then_retry(delay: float) -> None:
        waits.append(delay)
        await transaction.commit()  # the application finishes its write while the swap backs off

    try:
        status = await run(
            migration(database, manifest(lockTimeout="200ms", backup={"enabled": False}), backup_dir),
            sleep=release_then_retry,
        )
    finally:
        await app.close()
    assert status.phase is Phase.SUCCEEDED, status.message
    assert len(waits) == 1
    after = await snapshot(conn)
    assert after.rows["public.items"]["2"][1] == "written by the app"  # the acknowledged write is there
    assert {k: v for k, v in after.rows.items() if k != "public.items"} == {
        k: v for k, v in before.rows.items() if k != "public.items"
    }


async def test_a_dry_run_changes_nothing_and_publishes_the_plan(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    status = await run(migration(database, manifest(dryRun=True), backup_dir))

    assert status.phase is Phase.CHECKLIST
    assert condition(status, "ChecklistPassed").status == "True"
    assert condition(status, "Ready").reason == Reason.DRY_RUN
    assert condition(status, "Ready").status == "True"  # what was asked (a plan) is done
    assert status.phase is Phase.CHECKLIST  # and nothing was migrated
    assert status.plan_hash and status.plan_hash.startswith("sha256:")
    assert await snapshot(conn) == before
    assert not backup_dir.exists()


async def test_the_plan_hash_is_stable_for_the_same_database_and_spec(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    first = await run(migration(database, manifest(dryRun=True), backup_dir))
    second = await run(migration(database, manifest(dryRun=True), backup_dir))
    changed = await run(migration(database, manifest(dryRun=True, reindex={"mode": "Concurrent"}), backup_dir))

    assert first.plan_hash == second.plan_hash
    assert changed.plan_hash != first.plan_hash


async def test_manual_approval_waits_for_the_current_plan_hash(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    waiting = await run(migration(database, manifest(approval="Manual"), backup_dir))
    assert waiting.phase is Phase.AWAITING_APPROVAL
    assert f"approve hash {waiting.plan_hash}" in waiting.message
    stale = await run(migration(database, manifest(approval="Manual"), backup_dir, approved_hash="sha256:0000"))
    assert stale.phase is Phase.AWAITING_APPROVAL
    assert "sha256:0000 is stale" in stale.message
    assert await snapshot(conn) == before

    approved = await run(migration(database, manifest(approval="Manual"), backup_dir, approved_hash=waiting.plan_hash))
    assert approved.phase is Phase.SUCCEEDED, approved.message


@pytest.mark.parametrize("stop_after", [Phase.REINDEX, Phase.VERIFY])
async def test_a_run_cut_off_after_the_swap_is_continued_not_repeated(
    stop_after: Phase, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    from vector_migration.engine.context import close_session, open_session
    from vector_migration.engine.runner import step

    await create_rich_database(conn)
    before = await snapshot(conn)
    resource = manifest(reindex={"mode": "Concurrent"})
    first = migration(database, resource, backup_dir)
    assert await open_session(first) is None
    while first.status.phase is not stop_after:
        await step(first)
    await close_session(first)  # the process dies here: no status survives
    swapped_at = await conn.fetchval("SELECT recorded_at FROM vector_migration.journal WHERE event = 'swapped'")
    archives = sorted(backup_dir.iterdir())

    status = await run(migration(database, resource, backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert condition(status, "ExtensionSwapped").reason == Reason.ALREADY_DONE
    assert await conn.fetchval("SELECT recorded_at FROM vector_migration.journal WHERE event = 'swapped'") == swapped_at
    assert sorted(backup_dir.iterdir()) == archives
    assert (await snapshot(conn)).rows == before.rows
    assert all(t.checksum_before == t.checksum_after for t in status.verification.tables)
    assert status.verification.indexes and all(
        i.recall_before is not None for i in status.verification.indexes if i.queries
    )


async def test_a_lost_connection_is_retried(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    killed: list[int] = []

    async def kill_the_migration_session(_: float) -> None:
        return None

    m = migration(database, manifest(backup={"enabled": False}), backup_dir)
    from vector_migration.engine.context import open_session
    from vector_migration.engine.runner import step

    assert await open_session(m) is None
    await step(m)  # checklist
    assert m.status.phase is Phase.SWAP
    killed.append(await conn.fetchval("SELECT pg_terminate_backend($1)", m.session.get_server_pid()))
    await asyncio.sleep(0.1)

    status = await run(m, sleep=kill_the_migration_session)

    assert killed == [True]
    assert status.phase is Phase.SUCCEEDED, status.message


async def test_a_role_that_cannot_drop_pgvector_is_told_before_anything_changes(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    # An application role that owns its tables but not the extension (a superuser created it).
    await conn.execute(
        f"""
        DROP ROLE IF EXISTS vmig_app_{database.dbname};
        CREATE ROLE vmig_app_{database.dbname} LOGIN;
        GRANT CREATE ON DATABASE {database.dbname} TO vmig_app_{database.dbname};
        ALTER TABLE items OWNER TO vmig_app_{database.dbname};
        """
    )
    before = await snapshot(conn)
    app = ConnectionParams(host=database.host, dbname=database.dbname, user=f"vmig_app_{database.dbname}")

    status = await run(migration(app, manifest(), backup_dir))

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.INSUFFICIENT_PRIVILEGE
    role = f"vmig_app_{database.dbname}"
    # every problem in one message, each saying what to fix
    assert f"creating extension ruvector_standin needs a superuser (it is not trusted); role {role} is not one" in (
        status.message
    )
    assert f'role {role} must own Odd Schema.Mixed "Quoted" Table; must own public.empty_vectors' in status.message
    assert "must own public.category_a" in status.message  # the view it would recreate
    assert "must own extension vector to drop it" in status.message
    assert "public.items" not in status.message  # it does own that one
    assert await snapshot(conn) == before


@pytest.mark.parametrize("phase", [Phase.REINDEX, Phase.VERIFY])
async def test_a_run_that_starts_after_the_swap_with_no_memory_reads_the_journal(
    phase: Phase, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    """As after an operator restart: the status says Reindex or Verify, the process knows nothing."""
    from vector_migration.engine.context import close_session, open_session
    from vector_migration.engine.runner import step

    await create_rich_database(conn)
    first = migration(database, manifest(), backup_dir)
    assert await open_session(first) is None
    while first.status.phase is not Phase.REINDEX:
        await step(first)
    await close_session(first)
    indexes = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%ruhnsw%'")
    await conn.execute("DROP INDEX items_l2")  # the index verify must notice

    restarted = migration(database, manifest(), backup_dir)
    restarted.status.phase = phase
    status = await run(restarted)

    if phase is Phase.REINDEX:  # the reindex rebuilds what is missing, then verify passes
        assert status.phase is Phase.SUCCEEDED, status.message
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%ruhnsw%'") == indexes
    else:  # verify alone must not pass vacuously: it knows which indexes the swap planned
        assert status.phase is Phase.ROLLED_BACK
        assert "index items_l2 is missing" in status.message


async def test_every_refusal_of_the_mapping_and_the_strategy_is_named_in_one_run(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await conn.execute(
        """
        CREATE EXTENSION vector;
        CREATE TABLE owners (id int PRIMARY KEY);
        CREATE TABLE notes (id int PRIMARY KEY REFERENCES owners, embedding vector(3), half halfvec(3),
                            sparse sparsevec(5));
        CREATE TABLE archived_notes (archived_at date) INHERITS (notes);
        """
    )
    before = await snapshot(conn)

    status = await run(migration(database, manifest(strategy="Rebuild"), backup_dir))

    assert status.phase is Phase.FAILED
    # Two columns the stand-in has no type for, and a table Rebuild cannot empty: all three at once.
    assert "notes.half is halfvec" in status.message and "notes.sparse is sparsevec" in status.message, status.message
    assert "inherits or is inherited from" in status.message, status.message
    assert await snapshot(conn) == before
