"""The server lost mid-phase: crashed and recovering (``pg_ctl restart -m immediate``), or frozen.

Each scenario holds a phase at a known statement (a lock the application holds, a snapshot a
concurrent build waits for, a CHECK that is slow to evaluate), takes the server away there, and
asserts that the run either finishes or stops with one line within its deadline, with every row
as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.reliability.harness import (
    advance_to,
    open_application_transaction,
    plain,
    row_locked,
    rows_lost_and_invalid_indexes,
    until,
)
from tests.reliability.report import declare, observe, rows_lost
from tests.scenarios import condition, create_rich_database, manifest, migration, snapshot
from vector_migration.database.liveness import HeartbeatSettings
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.context import close_session
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

COMMAND_LINE_GIVES_UP_ON = frozenset({Reason.MIGRATION_LOCKED, Reason.DATABASE_UNAVAILABLE})
QUICK_HEARTBEAT = HeartbeatSettings(interval=0.5, misses=3)
RECONNECT_FOR = 60.0
DEADLINE = 150.0  # the run's own bound: reconnecting for RECONNECT_FOR, then the phases again

# A CHECK constraint that takes a few milliseconds a row: a Rebuild's COPY or an InPlace rewrite
# is then still running when the server goes.
SLOW_CHECK = """
CREATE FUNCTION public.slow_ok(i int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.002); RETURN true; END $$;
ALTER TABLE items ADD CONSTRAINT items_slow CHECK (public.slow_ok(id));
"""


async def waiting_on_a_lock(conn: asyncpg.Connection, application: str = "vector-migration") -> int | None:
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock' "
        "AND datname = current_database() LIMIT 1",
        application,
    )
    return pid


async def running(conn: asyncpg.Connection, query_like: str) -> int | None:
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'vector-migration' AND state = 'active' "
        "AND query ILIKE $1 AND datname = current_database() LIMIT 1",
        query_like,
    )
    return pid


@dataclass(frozen=True)
class Hold:
    """Where a phase is held while the server goes: what holds it and how to see it is held there."""

    phase: Phase  # the phase the run is advanced to before it starts
    spec: dict[str, Any]
    arrange: str  # SQL run before the migration starts
    holding: Callable[[ConnectionParams], contextlib.AbstractAsyncContextManager[Any]] | None
    held: Callable[[asyncpg.Connection], Awaitable[Any]]
    described: str


def table_locked(database: ConnectionParams) -> contextlib.AbstractAsyncContextManager[Any]:
    return open_application_transaction(database, "LOCK TABLE items IN ACCESS EXCLUSIVE MODE")


def snapshot_held(database: ConnectionParams) -> contextlib.AbstractAsyncContextManager[Any]:
    return open_application_transaction(database, "SELECT count(*) FROM pg_class", isolation="repeatable_read")


PATIENT = {"lockTimeout": "60s"}
HOLDS = {
    "checklist": Hold(Phase.PENDING, PATIENT, "", table_locked, waiting_on_a_lock,
                      "the checklist waits for the application's ACCESS EXCLUSIVE lock"),
    "backup": Hold(Phase.BACKUP, PATIENT, "", table_locked, lambda c: waiting_on_a_lock(c, "pg_dump"),
                   "pg_dump waits for the application's ACCESS EXCLUSIVE lock"),
    "swap": Hold(Phase.SWAP, PATIENT, "", row_locked, waiting_on_a_lock,
                 "the swap transaction waits for an application's row lock"),
    "rebuild-copy": Hold(Phase.SWAP, {"strategy": "Rebuild", "backup": {"enabled": True}}, SLOW_CHECK, None,
                         lambda c: running(c, "COPY%FROM STDIN%"), "Rebuild's COPY … FROM STDIN is running"),
    "reindex": Hold(Phase.REINDEX, {"reindex": {"mode": "Concurrent"}, **PATIENT}, "", snapshot_held,
                    lambda c: running(c, "CREATE INDEX CONCURRENTLY%"),
                    "CREATE INDEX CONCURRENTLY waits for an old snapshot"),
    "verify": Hold(Phase.VERIFY, PATIENT, "", table_locked, waiting_on_a_lock,
                   "verification's first read waits for the application's ACCESS EXCLUSIVE lock"),
}  # fmt: skip

for _name, _hold in HOLDS.items():
    declare(
        f"database-crashed-during-{_name}",
        f"PostgreSQL is killed and recovers (pg_ctl restart -m immediate) while {_hold.described}",
        "the run reconnects within --reconnect-for and continues from the journal; Succeeded",
    )


@pytest.mark.parametrize("name", list(HOLDS))
async def test_the_database_crashes_at_each_phase_and_the_run_finishes_from_the_journal(
    postgres: EmbeddedPostgres,
    database: ConnectionParams,
    conn: asyncpg.Connection,
    backup_dir: Path,
    name: str,
) -> None:
    hold = HOLDS[name]
    await create_rich_database(conn)
    if hold.arrange:
        await conn.execute(hold.arrange)
    before = await snapshot(conn)
    m = migration(database, manifest(**hold.spec), backup_dir, heartbeat=QUICK_HEARTBEAT)
    if hold.phase is not Phase.PENDING:
        await advance_to(m, hold.phase)
        await close_session(m)

    holder = hold.holding(database) if hold.holding else contextlib.nullcontext()
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(holder)
        migrating = asyncio.create_task(run(m, reconnect_for=RECONNECT_FOR))
        await until(lambda: hold.held(conn), seconds=60)
        await asyncio.to_thread(postgres.restart, "immediate")
    status = await asyncio.wait_for(migrating, timeout=DEADLINE)
    took = time.monotonic() - started

    lost, invalid = await rows_lost_and_invalid_indexes(database, before.rows)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert invalid == 0 and lost == 0
    observe(f"database-crashed-during-{name}", f"reconnected; {status.phase.value} in {took:.0f}s", lost)


# --------------------------------------------------------------------------- a frozen server


def postgres_processes(pgdata: Path) -> list[int]:
    """The postmaster and every process it started."""
    postmaster = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry.name))
    return [postmaster, *children]


@contextlib.asynccontextmanager
async def server_frozen(pgdata: Path) -> AsyncIterator[None]:
    """Every PostgreSQL process stopped (SIGSTOP), as a hung host or a partition that drops packets looks."""
    processes = postgres_processes(pgdata)
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


declare(
    "database-frozen-during-rebuild-copy",
    "every PostgreSQL process is stopped (SIGSTOP) while Rebuild's COPY … FROM STDIN runs, and stays stopped",
    "the heartbeat ends the session; the run tries to reconnect until --reconnect-for runs out and stops "
    "with one line (DatabaseUnavailable); once the server runs again nothing is half-done and a new run Succeeds",
)


async def test_a_frozen_server_ends_the_run_with_one_line_and_a_new_run_finishes(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    await conn.execute(SLOW_CHECK)
    before = await snapshot(conn)
    resource = manifest(strategy="Rebuild", backup={"enabled": True})
    m = migration(database, resource, backup_dir, heartbeat=QUICK_HEARTBEAT)
    await advance_to(m, Phase.SWAP)
    await close_session(m)

    # As the command line runs it: a database that stays away is given up on once reconnecting ends.
    migrating = asyncio.create_task(run(m, give_up_on=COMMAND_LINE_GIVES_UP_ON, reconnect_for=5.0))
    await until(lambda: running(conn, "COPY%FROM STDIN%"), seconds=60)
    started = time.monotonic()
    async with server_frozen(postgres.pgdata):
        status = await asyncio.wait_for(migrating, timeout=60)
        took = time.monotonic() - started
    assert status.phase is Phase.FAILED
    assert condition(status, "Ready").reason == Reason.DATABASE_UNAVAILABLE
    assert "\n" not in status.message and "no answer within" in status.message

    await until(lambda: _reachable(database), seconds=30)
    inspector = await plain(database)
    try:
        unchanged = rows_lost(before.rows, (await snapshot(inspector)).rows)
        assert "vector" in (await snapshot(inspector)).extensions  # the swap never committed
    finally:
        await inspector.close()
    again = await run(migration(database, resource, backup_dir), reconnect_for=RECONNECT_FOR)
    assert again.phase is Phase.SUCCEEDED, again.message
    observe(
        "database-frozen-during-rebuild-copy",
        f"stopped after {took:.0f}s: {status.message[:80]}; nothing half-done; a new run Succeeded",
        unchanged,
    )


async def _reachable(database: ConnectionParams) -> bool:
    try:
        probe = await asyncio.wait_for(plain(database), timeout=2)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    await probe.close()
    return True
