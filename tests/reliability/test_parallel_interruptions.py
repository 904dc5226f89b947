"""The Parallel strategy interrupted where it copies and where it swaps names: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from tests.application import create_shop, docs_before
from tests.reliability.harness import advance_to, migration_backend, no_sleep, row_locked, until
from tests.reliability.report import observe, scenario
from tests.scenarios import manifest, migration
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase

# Slow enough (3,000 rows at 1,500 rows/s in batches of 100) to be caught in the middle.
PARALLEL = {
    "strategy": "Parallel",
    "backup": {"enabled": False},
    "lockTimeout": "30s",
    "parallel": {"batchSize": 100, "rowsPerSecond": 1500, "keepOldFor": "0s"},
}


async def docs_lost(conn: asyncpg.Connection, before: dict[int, str | None]) -> int:
    """Rows of the table before the migration missing now, or holding another vector; duplicates count too."""
    rows = await conn.fetch("SELECT id, embedding::text AS embedding FROM docs")
    now = {row["id"]: row["embedding"] for row in rows}
    doubled = len(rows) - len(now)
    return doubled + sum(1 for doc, vector in before.items() if now.get(doc) != vector)


@scenario(
    "session-terminated-during-backfill",
    "pg_terminate_backend on the migration's session while the Parallel backfill copies batches",
    "the batch in flight rolls back; the run reconnects and continues from the cursor committed with the last "
    "batch; every row copied once; Succeeded",
)
async def test_session_terminated_during_the_backfill(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    before = await docs_before(conn)
    m = migration(database, manifest(**PARALLEL), backup_dir)
    await advance_to(m, Phase.BACKFILL)
    running = asyncio.create_task(run(m, sleep=no_sleep))

    async def backfilling_session() -> int | None:
        """The migration's session while the shadow is partly copied (its last statement may be a batch or
        the cursor's journal row, so it is found by name, not by query)."""
        copied = await conn.fetchval("SELECT count(*) FROM docs_vmig_shadow")
        return await migration_backend(conn, "%", active=False) if 0 < copied < len(before) else None

    pid = await until(backfilling_session)
    copied_when_killed = await conn.fetchval("SELECT count(*) FROM docs_vmig_shadow")
    assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    status = await running

    lost = await docs_lost(conn, before)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert lost == 0
    observe(
        "session-terminated-during-backfill",
        f"killed after {copied_when_killed} of {len(before)} rows; resumed from the cursor; {status.phase.value}",
        lost,
    )


@scenario(
    "session-terminated-during-finalize",
    "pg_terminate_backend on the migration's session while the finalize waits for its table lock",
    "the finalize transaction rolls back (no rename happened); the run reconnects and finalizes; Succeeded",
)
async def test_session_terminated_during_the_finalize(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    before = await docs_before(conn)
    m = migration(database, manifest(**PARALLEL), backup_dir)
    await advance_to(m, Phase.FINALIZE)
    async with row_locked(database, "docs"):
        running = asyncio.create_task(run(m, sleep=no_sleep))
        pid = await until(lambda: migration_backend(conn, "LOCK TABLE%"))
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        # still the application's original table: the renames never committed
        assert await conn.fetchval("SELECT to_regclass('docs_vmig_shadow') IS NOT NULL")
    status = await running

    lost = await docs_lost(conn, before)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval("SELECT to_regclass('docs_vmig_shadow') IS NULL")
    assert lost == 0
    observe("session-terminated-during-finalize", f"renames rolled back, then finalized; {status.phase.value}", lost)
