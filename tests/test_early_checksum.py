"""The swap's "before" checksum read ahead of the lock: PostgreSQL's row versions say when it still holds.

Where the swap builds no index (reindex.mode Concurrent), the "before" checksum is read while the
application still writes, and under the lock one scan of the rows' (ctid, xmin) shows whether the
same row versions are there. These tests hold that claim against PostgreSQL's MVCC (every kind of
write, and what only looks like one), then run whole migrations where the application writes
between the early read and the lock, where the early read is wrongly trusted, and where the
conversion itself loses a value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.replication import session
from tests.scenarios import condition, create_rich_database, manifest, migration, snapshot
from vector_migration.database.early_checksum import early_checksum, still_current
from vector_migration.database.measure import BINARY, table_checksum
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.runner import run
from vector_migration.phases import probe, swap
from vector_migration.vocabulary import ChecksumMode, Phase, Reason, StatementKind


@pytest.fixture
async def notes(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute(
        """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE notes (id int PRIMARY KEY, tag text, v vector(3)) WITH (fillfactor = 50);
        INSERT INTO notes SELECT i, 't' || i, ARRAY[i, i + 1, i + 2]::real[]::vector FROM generate_series(1, 200) i;
        """
    )
    return conn


async def early_then(conn: asyncpg.Connection, database: ConnectionParams, *writes: str) -> bool:
    """Read the early checksum, let another session run ``writes`` (one transaction each), ask under a lock."""
    early = await early_checksum(conn, "public", "notes", {"v"}, BINARY)
    assert early.content == await table_checksum(conn, "public", "notes", {"v"}, BINARY)
    other = await session(database)
    try:
        for write in writes:
            await other.execute(write)
    finally:
        await other.close()
    async with conn.transaction():
        await conn.execute("LOCK notes IN ACCESS EXCLUSIVE MODE")
        return await still_current(conn, "public", "notes", early)


@pytest.mark.parametrize(
    "nothing_changed",
    [
        "SELECT * FROM notes WHERE id < 50 FOR UPDATE",  # xmax set, the versions stay
        "VACUUM notes",
        "VACUUM (FREEZE) notes",  # frozen: PostgreSQL keeps the raw xmin
        "ANALYZE notes",
        "BEGIN; INSERT INTO notes VALUES (1000, 'gone', '[1,1,1]'); ROLLBACK",
        "BEGIN; UPDATE notes SET tag = 'gone' WHERE id = 7; ROLLBACK",
        "BEGIN; DELETE FROM notes WHERE id = 9; ROLLBACK",
    ],
)
async def test_what_writes_no_row_version_leaves_the_early_checksum_current(
    notes: asyncpg.Connection, database: ConnectionParams, nothing_changed: str
) -> None:
    assert await early_then(notes, database, nothing_changed)


@pytest.mark.parametrize(
    "changes",
    [
        ["INSERT INTO notes VALUES (1000, 'new', '[1,1,1]')"],
        ["UPDATE notes SET v = '[9,9,9]' WHERE id = 3"],
        ["UPDATE notes SET tag = tag WHERE id = 3"],  # the same values, a new version (HOT, same page)
        ["DELETE FROM notes WHERE id = 5"],
        # a row replaced by an equal one: the content sum would not move, the versions do
        ["DELETE FROM notes WHERE id = 5", "INSERT INTO notes VALUES (5, 't5', '[5,6,7]')"],
        ["DELETE FROM notes WHERE id = 5", "VACUUM notes", "INSERT INTO notes VALUES (5, 'x', '[0,0,0]')"],
        ["TRUNCATE notes"],
    ],
)
async def test_every_write_between_the_early_read_and_the_lock_is_seen(
    notes: asyncpg.Connection, database: ConnectionParams, changes: list[str]
) -> None:
    assert not await early_then(notes, database, *changes)


async def test_a_write_in_flight_at_the_early_read_and_committed_before_the_lock_is_seen(
    notes: asyncpg.Connection, database: ConnectionParams
) -> None:
    writer = await session(database)
    try:
        await writer.execute("BEGIN; UPDATE notes SET v = '[0,0,0]' WHERE id = 11; SAVEPOINT s;"
                             " INSERT INTO notes VALUES (2000, 'sub', '[2,2,2]')")  # fmt: skip
        early = await early_checksum(notes, "public", "notes", {"v"}, BINARY)
        await writer.execute("COMMIT")
    finally:
        await writer.close()
    async with notes.transaction():
        await notes.execute("LOCK notes IN ACCESS EXCLUSIVE MODE")
        assert not await still_current(notes, "public", "notes", early)


SwapHook = Callable[..., Awaitable[Any]]


def after_the_early_read(monkeypatch: pytest.MonkeyPatch, database: ConnectionParams, write: str) -> list[str]:
    """The application writes ``write`` right after the swap's early read of items; returns the tables read."""
    read = swap.early_checksum
    calls: list[str] = []

    async def reading_then_writing(*args: Any) -> Any:
        early = await read(*args)
        if args[2] == "items" and "items" not in calls:
            app = await session(database)
            try:
                await app.execute(write)
            finally:
                await app.close()
        calls.append(args[2])
        return early

    monkeypatch.setattr(swap, "early_checksum", reading_then_writing)
    return calls


async def test_a_concurrent_swap_reads_the_before_checksum_ahead_of_the_lock(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    status = await run(migration(database, manifest(reindex={"mode": "Concurrent"}), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows
    swapped = condition(status, "ExtensionSwapped").message
    assert "checksums equal (3 of 3 read before the lock, the same rows under it)" in swapped
    assert status.timings["checksumBeforeLockSeconds"] > 0
    assert all(t.checksum_before == t.checksum_after for t in status.verification.tables)


async def test_an_atomic_swap_reads_both_checksums_under_the_lock(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    # Atomic builds the indexes inside the transaction: the early read would lengthen the migration
    await create_rich_database(conn)

    status = await run(migration(database, manifest(), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert "read before the lock" not in condition(status, "ExtensionSwapped").message
    assert "checksumBeforeLockSeconds" not in status.timings


async def test_a_write_between_the_early_read_and_the_lock_is_checksummed_under_the_lock(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_rich_database(conn)
    after_the_early_read(monkeypatch, database, "UPDATE items SET label = 'written' WHERE id = 7")
    expected = await snapshot(conn)
    expected.rows["public.items"]["7"] = ("7", "written", *expected.rows["public.items"]["7"][2:])

    status = await run(migration(database, manifest(reindex={"mode": "Concurrent"}), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == expected.rows
    # items was read again under the lock; the two tables nobody wrote were not
    assert "(2 of 3 read before the lock" in condition(status, "ExtensionSwapped").message


@pytest.mark.parametrize("prints_alike", [True, False], ids=["binary-checksums", "value-checksums"])
async def test_an_early_checksum_wrongly_trusted_fails_against_the_after_checksum_and_is_read_again(
    database: ConnectionParams,
    conn: asyncpg.Connection,
    backup_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    prints_alike: bool,
) -> None:
    # As if the row versions' identity sums collided: the lock is told nothing changed, but a row did.
    await create_rich_database(conn)
    if not prints_alike:  # a target printing values its own way: value checksums from the start

        async def prints_otherwise(*args: Any) -> bool:
            return False

        monkeypatch.setattr(probe, "prints_identically", prints_otherwise)
    reads = after_the_early_read(monkeypatch, database, "DELETE FROM items WHERE id = 7")

    async def always_current(*args: Any) -> bool:
        return True

    monkeypatch.setattr(swap, "still_current", always_current)
    expected = await snapshot(conn)
    del expected.rows["public.items"]["7"]

    status = await run(migration(database, manifest(reindex={"mode": "Concurrent"}), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == expected.rows  # the deleted row stays deleted, nothing else moved
    assert len(reads) == 3  # one early read per table, once: the retry read both checksums under the lock
    assert "read before the lock" not in condition(status, "ExtensionSwapped").message
    assert status.verification.checksum_mode == ChecksumMode.NORMALIZED


async def test_a_conversion_that_loses_a_value_still_fails_and_changes_nothing(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    execute = swap.execute

    async def losing_a_value(m: Any, statement: Any) -> None:
        await execute(m, statement)
        if statement.step is StatementKind.CONVERT_COLUMNS:  # as a target's lossy cast would
            await m.session.execute("UPDATE public.items SET embedding = NULL WHERE id = 7")

    monkeypatch.setattr(swap, "execute", losing_a_value)

    status = await run(migration(database, manifest(reindex={"mode": "Concurrent"}), backup_dir))

    assert status.phase is Phase.FAILED, status.message
    assert condition(status, "Ready").reason == Reason.DATA_MISMATCH, status.message
    assert "content changed during conversion" in status.message and "public.items" in status.message
    assert await snapshot(conn) == before
