"""A failure after the swap committed is undone: pgvector, the original indexes and the data come back."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import condition, create_rich_database, index_facts, manifest, migration, snapshot
from vector_migration.api import VectorMigrationStatus
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.context import close_session, open_session
from vector_migration.engine.runner import run, step
from vector_migration.vocabulary import Phase, Reason


async def migrate_until_verify_then_lose_an_index(
    params: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path, target: str, **spec: object
) -> object:
    resource = manifest(target, **spec)
    m = migration(params, resource, backup_dir)
    assert await open_session(m) is None
    while m.status.phase is not Phase.VERIFY:
        await step(m)
    await conn.execute("DROP INDEX items_l2")  # something breaks between the reindex and the verify
    return await run(m)


@pytest.mark.parametrize("target", ["ruvector_standin", "ruvector_v2_standin"])
async def test_a_failed_verification_rolls_back_to_pgvector(
    target: str, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    indexes_before = await index_facts(conn)

    status = await migrate_until_verify_then_lose_an_index(database, conn, backup_dir, target)

    assert status.phase is Phase.ROLLED_BACK
    assert condition(status, "RolledBack").status == "True"
    assert condition(status, "Stalled").status == "True"
    assert condition(status, "Stalled").reason == Reason.VERIFICATION_FAILED
    assert "index items_l2 is missing" in status.message
    assert "every table equals its pre-migration checksum" in status.message
    after = await snapshot(conn)
    assert after.rows == before.rows
    assert after.indexes == before.indexes
    assert await index_facts(conn) == indexes_before
    assert after.views == before.views
    assert "vector" in after.extensions and target not in after.extensions
    assert await conn.fetchval("SELECT has_table_privilege('vmig_test_reader', 'public.category_a', 'SELECT')")
    events = await conn.fetch("SELECT event FROM vector_migration.journal")
    assert [e["event"] for e in events] == ["rolled_back"]

    # The same migration can simply be run again.
    again = await run(migration(database, manifest(target), backup_dir))
    assert again.phase is Phase.SUCCEEDED, again.message
    assert (await snapshot(conn)).rows == before.rows


async def test_manual_rollback_policy_leaves_the_migrated_data_in_place(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    status = await migrate_until_verify_then_lose_an_index(
        database, conn, backup_dir, "ruvector_standin", rollback={"onFailure": "Manual"}
    )

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.VERIFICATION_FAILED
    assert "rollback.onFailure is Manual" in status.message
    after = await snapshot(conn)
    assert after.rows == before.rows
    assert "ruvector_standin" in after.extensions and "vector" not in after.extensions


async def test_nothing_is_rolled_back_when_no_swap_committed(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    m = migration(database, manifest(), backup_dir)
    assert await open_session(m) is None
    m.status.phase = Phase.ROLLING_BACK
    try:
        outcome = await step(m)
    finally:
        await close_session(m)
    assert outcome.reason == Reason.NOTHING_TO_ROLL_BACK  # type: ignore[union-attr]


async def test_a_spec_changed_after_the_swap_stops_without_rolling_back(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    first = migration(database, manifest(), backup_dir)
    assert await open_session(first) is None
    while first.status.phase is not Phase.VERIFY:
        await step(first)
    await close_session(first)

    # The resource is edited (here: the reindex mode); the next reconciliation reads it.
    edited = migration(database, manifest(reindex={"mode": "Concurrent"}), backup_dir)
    edited.status = first.status.model_copy(deep=True)
    status = await run(edited)

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.SPEC_CHANGED_AFTER_SWAP
    assert status.message.startswith("spec.reindex changed after the swap committed")
    after = await snapshot(conn)
    assert after.rows == before.rows
    assert "ruvector_standin" in after.extensions and "vector" not in after.extensions

    # Putting the spec back lets the same migration finish.
    restored = migration(database, manifest(), backup_dir)
    restored.status = first.status.model_copy(deep=True)
    assert (await run(restored)).phase is Phase.SUCCEEDED


async def test_a_swap_that_cannot_be_reversed_in_sql_is_restored_from_the_backup_with_consent(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    resource = manifest()
    first = migration(database, resource, backup_dir)
    assert await open_session(first) is None
    while first.status.phase is not Phase.VERIFY:
        await step(first)
    # After the swap the application creates a domain over the new type: the SQL way back would
    # have to drop it, so it is refused. Then verification fails.
    await conn.execute("CREATE DOMAIN public.embedding_8 AS public.ruvector(8)")
    await conn.execute("DROP INDEX items_l2")

    held = await run(first)

    assert held.phase is Phase.ROLLING_BACK
    assert condition(held, "RolledBack").reason == Reason.RESTORE_NEEDS_CONSENT
    assert "loses every write made since" in held.message
    found = re.search(r"consent with (sha256:[0-9a-f]{16})", held.message)
    assert found is not None, held.message
    assert "ruvector_standin" in (await snapshot(conn)).extensions  # nothing is restored without consent

    wrong = migration(database, resource, backup_dir, restore_consent="sha256:0000000000000000")
    wrong.status = held.model_copy(deep=True)
    still = await run(wrong)
    assert still.phase is Phase.ROLLING_BACK and "is not for this archive" in still.message

    consented = migration(database, resource, backup_dir, restore_consent=found.group(1))
    consented.status = still.model_copy(deep=True)
    done = await run(consented)

    assert done.phase is Phase.ROLLED_BACK, done.message
    assert condition(done, "RolledBack").reason == Reason.RESTORED
    assert "every table equals its pre-migration checksum" in done.message
    assert "ruvector_standin stays installed" in done.message  # the function made after the backup uses it
    after = await snapshot(conn)
    assert (after.rows, after.indexes, after.views) == (before.rows, before.indexes, before.views)
    assert "vector" in after.extensions
    events = await conn.fetch("SELECT event FROM vector_migration.journal")
    assert [e["event"] for e in events] == ["rolled_back"]


async def test_a_recall_drop_after_the_swap_is_measured_against_the_baseline_and_rolled_back(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    m = migration(database, manifest(), backup_dir)
    assert await open_session(m) is None
    while m.status.phase is not Phase.VERIFY:
        await step(m)
    # Between the reindex and the verify, the IVFFlat index is rebuilt with 200 lists for 600 rows,
    # and searches probe one list: exact neighbours now often sit in lists that are not probed.
    await conn.execute("DROP INDEX items_cosine_ivf")
    await conn.execute(
        "CREATE INDEX items_cosine_ivf ON items USING ruivfflat (embedding public.ruvector_cosine_ops)"
        " WITH (lists = 200)"
    )

    await m.session.execute("SET ivfflat.probes = 1")
    status = await run(m)

    assert status.phase is Phase.ROLLED_BACK
    assert condition(status, "Stalled").reason == Reason.RECALL_DROPPED
    measured = {i.name: i for i in status.verification.indexes}["items_cosine_ivf"]
    assert measured.recall_before == 1.0 and measured.recall_after < 0.9
    assert (await snapshot(conn)).rows == before.rows


@pytest.mark.parametrize("target", ["ruvector_standin", "ruvector_v2_standin"])
async def test_a_succeeded_migration_is_rolled_back_on_request_from_the_command_line(
    target: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    from tests.test_command_line import MANIFEST, url, write
    from vector_migration.cli.commands import main

    await create_rich_database(conn)
    before = await snapshot(conn)
    indexes_before = await index_facts(conn)
    document = {**MANIFEST, "spec": {**MANIFEST["spec"], "target": {"extension": target}}}  # type: ignore[dict-item]
    manifest_file, status_file = write(tmp_path, document), tmp_path / "status.json"
    common = ["-f", str(manifest_file), "--database-url", url(database), "--status-out", str(status_file)]
    assert await asyncio.to_thread(main, ["migrate", *common, "--backup-dir", str(tmp_path / "b")]) == 0
    assert target in (await snapshot(conn)).extensions

    code = await asyncio.to_thread(main, ["rollback", *common])

    status = VectorMigrationStatus.model_validate_json(status_file.read_text())
    assert code == 0, status.message
    assert status.phase is Phase.ROLLED_BACK
    # Asked for and done: the resource is where its owner wants it, so Ready, not Stalled.
    assert (condition(status, "Ready").status, condition(status, "Ready").reason) == ("True", "RollbackRequested")
    assert condition(status, "Stalled").status == "False"
    assert "every table equals its pre-migration checksum" in status.message
    after = await snapshot(conn)
    assert (after.rows, after.indexes, after.views) == (before.rows, before.indexes, before.views)
    assert await index_facts(conn) == indexes_before
    assert "vector" in after.extensions and target not in after.extensions

    # A second rollback finds nothing to undo and says so.
    assert await asyncio.to_thread(main, ["rollback", *common]) == 1
    again = VectorMigrationStatus.model_validate_json(status_file.read_text())
    assert condition(again, "Stalled").reason == Reason.NOTHING_TO_ROLL_BACK
