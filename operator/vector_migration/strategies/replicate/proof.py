"""The switchover's proof, taken at a cut of the live database's history while the application writes.

A checksum reads every row: taken with writes blocked, it made the switchover's window grow with
the tables (0.17 s at 10,000 rows, 0.49 s at 100,000). Here the live side's tables are held in
SHARE mode (writers wait, readers do not) only until the standby has confirmed everything up to
that point. A snapshot of each side is taken there, the tables are let go, and both snapshots are
checksummed while writes go on.

What the block then has to show is that nothing but replication changed the standby after the
cut. The rows were equal at the cut, and every later change reaches the standby through the
channel in commit order: once the channel has confirmed all of the live side's WAL, the standby
equals the live side unless someone else wrote to it. A client session is how anyone writes, so
the cut counts the standby's sessions (``pg_stat_database.sessions``). A session still open is
seen in ``pg_stat_activity``; one that has closed has been counted, because a backend reports
its statistics before it leaves ``pg_stat_activity``. When any session other than the
migration's own came, the tables are checksummed again with writes blocked, as before.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg
from asyncpg.transaction import Transaction

from ...api import duration_ms
from ...database.catalog_state import CatalogState
from ...database.sql import quote_literal, set_timeouts
from ...engine.context import Migration
from .plan import share_lock


@dataclass(frozen=True)
class Cut:
    """The point both sides were proven equal at, and the standby's session count then."""

    sessions: int  # client sessions ever opened on the standby (pg_stat_database.sessions)
    catalog: CatalogState | None = None  # the live side's catalog at the cut: under the block it must be the same


async def standby_sessions(standby: asyncpg.Connection) -> int:
    """Client sessions ever opened on the standby's database, as counted now (not a cached figure)."""
    await standby.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
    count = await standby.fetchval(
        "SELECT sessions FROM pg_catalog.pg_stat_database WHERE datname = pg_catalog.current_database()"
    )
    return int(count or 0)


async def others_on(standby: asyncpg.Connection, own: list[int]) -> list[int]:
    """Client sessions on the standby's database that are not the migration's."""
    rows = await standby.fetch(
        "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() "
        "AND backend_type = 'client backend' AND pid <> ALL($1::int[])",
        own,
    )
    return [row["pid"] for row in rows]


async def hold(live: Migration, tables: list[tuple[str, str]]) -> tuple[Transaction, str] | None:
    """The live side's tables held in SHARE mode in an open transaction, and the snapshot it exported.

    Writers wait (readers do not) until the transaction ends. The tables are locked one after
    another, so an application transaction writing two of them could deadlock with the hold, and
    PostgreSQL might end the application's transaction to break it. Each attempt therefore gives
    up well before ``deadlock_timeout``, when the detector would run, lets go of what it holds
    and tries again, for ``lockTimeout`` in all (then None). As the login itself, as the
    checksums are.
    """
    detector_ms = int(
        await live.session.fetchval("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'deadlock_timeout'")
    )
    attempt_ms = max(1, min(100, detector_ms // 2))
    deadline = time.monotonic() + duration_ms(live.spec.lock_timeout) / 1000
    lock = share_lock(tuple(tables))  # the plan's statement (ReplicatePlan.switchover, .on_rollback)
    while True:
        transaction = live.session.transaction()
        await transaction.start()
        try:
            if live.acting_role is not None:
                await live.session.execute("SET LOCAL ROLE NONE")
            await set_timeouts(live.session, f"{attempt_ms}ms", live.spec.statement_timeout)
            await live.session.execute(lock)
            snapshot = str(await live.session.fetchval("SELECT pg_catalog.pg_export_snapshot()"))
            return transaction, snapshot
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
            await transaction.rollback()
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(attempt_ms / 1000)
        except BaseException:
            await transaction.rollback()
            raise


async def reading_at(reader: asyncpg.Connection, snapshot: str | None) -> Transaction:
    """An open read-only transaction that sees the exported ``snapshot``, or takes its own now."""
    transaction = reader.transaction(isolation="repeatable_read", readonly=True)
    await transaction.start()
    try:
        if snapshot is not None:
            await reader.execute(f"SET TRANSACTION SNAPSHOT {quote_literal(snapshot)}")
        else:
            await reader.execute("SELECT 1")  # a repeatable read transaction's first statement takes its snapshot
    except BaseException:
        await transaction.rollback()
        raise
    return transaction
