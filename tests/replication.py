"""What the Replicate scenarios share: a server with wal_level = logical, the shop in a database of its own on it.

Logical replication needs ``wal_level = logical``, which needs a restart: those scenarios run on a
server of their own (tests/conftest.py's ``logical_server``), never on the suite's default one.
"""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg

from tests.application import create_shop
from tests.servers import restart_with
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres, create_database
from vector_migration.engine.context import Migration, close_session
from vector_migration.engine.outcomes import Hold, Outcome
from vector_migration.engine.runner import drive
from vector_migration.vocabulary import Phase, Reason

REPLICATE: dict[str, Any] = {"strategy": "Replicate", "backup": {"enabled": False}, "replicate": {"keepOldFor": "1h"}}
_shops = itertools.count(1)


def make_logical(server: EmbeddedPostgres) -> None:
    """wal_level = logical, with room for every test's old database to keep following its new one."""
    restart_with(server, {
        "wal_level": "logical",
        "max_logical_replication_workers": "24",
        "max_worker_processes": "40",
        "max_replication_slots": "40",
        "max_wal_senders": "40",
        "max_active_replication_origins": "40",
        # A subscription whose connection was killed starts again after this (5s by default).
        "wal_retrieve_retry_interval": "500ms",
    })  # fmt: skip


async def shop_on(server: EmbeddedPostgres) -> ConnectionParams:
    """The load tests' shop in a new database of the server."""
    name = f"shop_{next(_shops)}"
    await create_database(server.params(), name)
    params = server.params(name)
    conn = await session(params)
    try:
        await create_shop(conn)
    finally:
        await conn.close()
    return params


async def session(params: ConnectionParams, database: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=params.host, port=params.port, user=params.user, database=database or params.dbname
    )


async def server_state(params: ConnectionParams) -> tuple[list[str], list[str]]:
    """The replication slots and databases of this test's database: itself, and those named after it."""
    conn = await session(params, "postgres")
    ours = "datname = $1 OR datname LIKE $1 || '\\_%'"
    try:
        slot_query = f"SELECT slot_name FROM pg_replication_slots WHERE {ours.replace('datname', 'database')}"
        slot_names = [r["slot_name"] for r in await conn.fetch(slot_query, params.dbname)]
        databases = [
            r["datname"] for r in await conn.fetch(f"SELECT datname FROM pg_database WHERE {ours}", params.dbname)
        ]
        return slot_names, databases
    finally:
        await conn.close()


async def extensions(params: ConnectionParams, database: str | None = None) -> set[str]:
    conn = await session(params, database)
    try:
        return {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}
    finally:
        await conn.close()


def stop_at(phase: Phase) -> Any:
    """A drive() stop that holds the run just before ``phase`` (where a test cuts it off)."""

    async def stop(current: Phase) -> Outcome | None:
        return Hold(Reason.PAUSED, f"cut off before {phase.value}") if current is phase else None

    return stop


async def advance(m: Migration, phase: Phase) -> None:
    """Run the migration up to ``phase`` and let its process go (session closed)."""
    await drive(m, stop=stop_at(phase))
    await close_session(m)
    assert m.status.phase is phase, m.status.message
