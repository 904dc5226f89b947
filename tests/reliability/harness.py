"""What the fault scenarios share: driving a migration to a point, holding locks and snapshots, finding its session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg

from tests.reliability.report import rows_lost
from tests.scenarios import snapshot
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.context import Migration, open_session
from vector_migration.engine.runner import step
from vector_migration.vocabulary import Phase


async def no_sleep(_: float) -> None:
    return None


async def plain(database: ConnectionParams) -> asyncpg.Connection:
    return await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)


async def until(condition_met: Callable[[], Awaitable[Any]], seconds: float = 20.0) -> Any:
    """Poll until the condition returns something truthy; fail the test after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        value = await condition_met()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("the awaited state never came")


async def stop(running: asyncio.Task[Any]) -> None:
    """The operator process stops mid-run: its task is cancelled, its session closes, an open transaction aborts."""
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def advance_to(m: Migration, phase: Phase) -> None:
    """Step a migration until its status says ``phase`` (the next step would run it)."""
    assert await open_session(m) is None
    for _ in range(20):
        if m.status.phase is phase:
            return
        await step(m)
    raise AssertionError(f"never reached {phase.value}; at {m.status.phase.value}: {m.status.message}")


@contextlib.asynccontextmanager
async def open_application_transaction(
    database: ConnectionParams, statement: str, isolation: str = "read_committed"
) -> AsyncIterator[asyncpg.Connection]:
    """An application session inside a transaction that ran ``statement`` and stays open until the block ends."""
    holder = await plain(database)
    transaction = holder.transaction(isolation=isolation)
    await transaction.start()
    await holder.execute(statement)
    try:
        yield holder
    finally:
        with contextlib.suppress(Exception):
            await transaction.rollback()
        with contextlib.suppress(Exception):
            await holder.close()


def old_snapshot_held(database: ConnectionParams) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
    """An application transaction holding a snapshot: CREATE INDEX CONCURRENTLY waits for it to end."""
    return open_application_transaction(database, "SELECT count(*) FROM pg_class", isolation="repeatable_read")


def row_locked(
    database: ConnectionParams, table: str = "items"
) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
    """An application transaction that updated a row and has not committed: LOCK TABLE waits for it."""
    return open_application_transaction(
        database, f"UPDATE {table} SET id = id WHERE id = (SELECT min(id) FROM {table})"
    )


async def migration_backend(conn: asyncpg.Connection, query_like: str, *, active: bool = True) -> int | None:
    """The pid of the migration's session while it runs (or, not ``active``, last ran) a matching statement."""
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'vector-migration' AND query ILIKE $1 "
        "AND (state = 'active' OR NOT $2) AND datname = current_database() ORDER BY backend_start LIMIT 1",
        query_like,
        active,
    )
    return pid


async def rows_lost_and_invalid_indexes(database: ConnectionParams, rows_before: Any) -> tuple[int, int]:
    """After a run, in a session of its own: rows lost against ``rows_before``, and INVALID indexes left."""
    inspector = await plain(database)
    try:
        lost = rows_lost(rows_before, (await snapshot(inspector)).rows)
        invalid = await inspector.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
    finally:
        await inspector.close()
    return lost, int(invalid)
