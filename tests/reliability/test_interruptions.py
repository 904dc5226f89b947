"""Interruptions: the operator stopped, the migration's session killed, the database restarted.

Each scenario arranges the rich database, interrupts a migration at a known point, lets a fresh
run (with no memory but the status a resource would hold) continue, and compares every row with
what it held before.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.reliability.harness import (
    advance_to,
    migration_backend,
    no_sleep,
    old_snapshot_held,
    row_locked,
    rows_lost_and_invalid_indexes,
    stop,
    until,
)
from tests.reliability.report import declare, observe, rows_lost, scenario
from tests.scenarios import condition, create_rich_database, manifest, migration, snapshot
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.context import close_session
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase

CONCURRENT = {"reindex": {"mode": "Concurrent"}, "lockTimeout": "30s"}


async def finish_and_count_losses(
    database: ConnectionParams, resource: Any, backup_dir: Path, before: Any, **kwargs: Any
) -> tuple[Any, int]:
    status = await run(migration(database, resource, backup_dir, **kwargs), sleep=no_sleep)
    lost, invalid = await rows_lost_and_invalid_indexes(database, before.rows)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert invalid == 0
    assert lost == 0
    return status, lost


# ----------------------------------------------------------------------------- operator stopped

BOUNDARIES = [Phase.BACKUP, Phase.SWAP, Phase.REINDEX, Phase.VERIFY]
for _phase in BOUNDARIES:
    declare(
        f"operator-stopped-before-{_phase.value.lower()}",
        f"the operator stops between phases, just before {_phase.value}; a new one starts with the status only",
        "the new run continues from the journal and the status; Succeeded",
    )


@pytest.mark.parametrize("stop_before", BOUNDARIES, ids=lambda p: p.value)
async def test_operator_stopped_at_a_phase_boundary(
    stop_before: Phase, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    resource = manifest(**CONCURRENT)
    first = migration(database, resource, backup_dir)
    await advance_to(first, stop_before)
    await close_session(first)  # the process is gone, and its memory with it

    status, lost = await finish_and_count_losses(
        database, resource, backup_dir, before, status=first.status.model_copy(deep=True)
    )

    observe(f"operator-stopped-before-{stop_before.value.lower()}", f"{status.phase.value}: {status.message}", lost)


@scenario(
    "operator-stopped-mid-swap",
    "the operator stops while the swap transaction waits for an application's row lock",
    "the open transaction dies with the session; nothing changed; the next run swaps; Succeeded",
)
async def test_operator_stopped_in_the_middle_of_the_swap(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    resource = manifest(**CONCURRENT)
    async with row_locked(database):
        first = migration(database, resource, backup_dir)
        running = asyncio.create_task(run(first, sleep=no_sleep))
        await until(lambda: migration_backend(conn, "LOCK TABLE%"))
        await stop(running)
        assert "vector" in (await snapshot(conn)).extensions
        assert rows_lost(before.rows, (await snapshot(conn)).rows) == 0

    status, lost = await finish_and_count_losses(database, resource, backup_dir, before)

    observe("operator-stopped-mid-swap", f"nothing changed when stopped; then {status.phase.value}", lost)


@scenario(
    "operator-stopped-mid-reindex",
    "the operator stops while CREATE INDEX CONCURRENTLY waits for an old snapshot (an INVALID index is left)",
    "the next run finds the INVALID index, drops it and builds it again; Succeeded",
)
async def test_operator_stopped_in_the_middle_of_the_reindex(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    resource = manifest(**CONCURRENT)
    first = migration(database, resource, backup_dir)
    await advance_to(first, Phase.REINDEX)
    async with old_snapshot_held(database):
        running = asyncio.create_task(run(first, sleep=no_sleep))
        await until(lambda: migration_backend(conn, "CREATE INDEX CONCURRENTLY%"))
        await until(lambda: conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid"))
        await stop(running)
        # the cancelled build leaves its INVALID index behind, as a crash would
        left = await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")

    status, lost = await finish_and_count_losses(
        database, resource, backup_dir, before, status=first.status.model_copy(deep=True)
    )

    observe(
        "operator-stopped-mid-reindex",
        f"{left} INVALID index left by the stop, rebuilt by the next run; {status.phase.value}",
        lost,
    )


# ------------------------------------------------------------------------- session terminated


@scenario(
    "session-terminated-during-swap",
    "pg_terminate_backend on the migration's session while its swap transaction waits for a lock",
    "the transaction rolls back with the session; the run reconnects and swaps; Succeeded",
)
async def test_session_terminated_during_the_swap(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    m = migration(database, manifest(**CONCURRENT), backup_dir)
    async with row_locked(database):
        running = asyncio.create_task(run(m, sleep=no_sleep))
        pid = await until(lambda: migration_backend(conn, "LOCK TABLE%"))
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    status = await running

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert lost == 0
    observe("session-terminated-during-swap", f"reconnected and swapped; {status.phase.value}", lost)


# The same interrupted build, by a terminated session (the run reconnects) or a cancelled
# statement (the same run sees the error): either way an INVALID index is left to find.
INTERRUPTED_BUILD = {
    "session-terminated-during-reindex": (
        "pg_terminate_backend",
        "pg_terminate_backend on the migration's session during CREATE INDEX CONCURRENTLY",
        "the run reconnects, drops the INVALID index and builds it again; Succeeded",
    ),
    "build-cancelled-during-reindex": (
        "pg_cancel_backend",
        "pg_cancel_backend cancels CREATE INDEX CONCURRENTLY midway",
        "the INVALID index is found, dropped and rebuilt in the same run (up to three attempts); Succeeded",
    ),
}
for _id, (_, _fault, _expected) in INTERRUPTED_BUILD.items():
    declare(_id, _fault, _expected)


@pytest.mark.parametrize("scenario_id", sorted(INTERRUPTED_BUILD))
async def test_an_interrupted_concurrent_build_is_dropped_and_rebuilt(
    scenario_id: str, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    signal = INTERRUPTED_BUILD[scenario_id][0]
    await create_rich_database(conn)
    before = await snapshot(conn)
    m = migration(database, manifest(**CONCURRENT), backup_dir)
    await advance_to(m, Phase.REINDEX)
    async with old_snapshot_held(database):
        running = asyncio.create_task(run(m, sleep=no_sleep))
        pid = await until(lambda: migration_backend(conn, "CREATE INDEX CONCURRENTLY%"))
        await until(lambda: conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid"))
        assert await conn.fetchval(f"SELECT {signal}($1)", pid)
    status = await running

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    assert lost == 0
    observe(scenario_id, f"{signal}: the INVALID index dropped and rebuilt; {status.phase.value}", lost)


# --------------------------------------------------------------------------- database restarted


@scenario(
    "database-restarted-during-reindex",
    "PostgreSQL restarts (pg_ctl restart -m fast) while an index builds concurrently",
    "the run waits for the database, reconnects, rebuilds the INVALID index; Succeeded",
)
async def test_the_database_restarted_during_a_migration(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    m = migration(database, manifest(**CONCURRENT), backup_dir)
    await advance_to(m, Phase.REINDEX)

    async def short_sleep(_: float) -> None:
        await asyncio.sleep(0.5)

    async with old_snapshot_held(database):
        running = asyncio.create_task(run(m, sleep=short_sleep, max_waits=10))
        await until(lambda: migration_backend(conn, "CREATE INDEX CONCURRENTLY%"))
        await until(lambda: conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid"))
        await asyncio.to_thread(postgres.restart)
    status = await running

    lost, invalid = await rows_lost_and_invalid_indexes(database, before.rows)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert condition(status, "Verified").status == "True"
    assert invalid == 0 and lost == 0
    observe("database-restarted-during-reindex", f"reconnected after the restart; {status.phase.value}", lost)
