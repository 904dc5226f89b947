"""Replicate's other sessions: on the new database, the old one, and the server's maintenance database.

Each logs in as the control session does (the admin login when there is one, acting as the
application's role), so statements that run other roles' code run as they would on the source.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import asyncpg

from ...database.sql import ConnectionParams, connect
from ...engine.context import Migration, as_admin, call_timeout
from ...engine.records import Journal, ReplicaRecord
from .names import ReplicaNames, replica_names

MAINTENANCE_DATABASE = "postgres"


def login(m: Migration) -> ConnectionParams:
    """The login that creates databases, slots and subscriptions: the admin's, else the migration's."""
    return m.inputs.admin_params or m.params


@contextlib.asynccontextmanager
async def on_database(m: Migration, database: str) -> AsyncIterator[Migration]:
    """The migration as seen from another database of the same server: its session, the same status and facts.

    The returned Migration shares the run's status, facts and decisions; only its session (and the
    parameters an index build's progress watcher connects with) differ.
    """
    conn = await connect(login(m).with_database(database), command_timeout=call_timeout(m.spec.statement_timeout))
    try:
        if m.acting_role is not None:
            await conn.execute("SELECT pg_catalog.set_config('role', $1, false)", m.acting_role)
        inputs = dataclasses.replace(m.inputs, params=m.params.with_database(database), heartbeat=None)
        yield dataclasses.replace(m, inputs=inputs, conn=conn, heartbeat=None)
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5.0)


@contextlib.asynccontextmanager
async def maintenance(m: Migration) -> AsyncIterator[asyncpg.Connection]:
    """A session on the maintenance database, with the login's own privileges (renames, terminations)."""
    conn = await connect(login(m).with_database(MAINTENANCE_DATABASE), command_timeout=60.0)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5.0)


async def admin_execute(m: Migration, *statements: str) -> None:
    """Statements that need the login's own privileges (databases, publications, slots, subscriptions)."""
    async with as_admin(m):
        for statement in statements:
            await m.session.execute(statement)


def names_of(m: Migration, recorded: Journal | None = None) -> ReplicaNames:
    """The migration's names: as recorded once the new database exists, else derived from the spec."""
    replica: ReplicaRecord | None = recorded.replica if recorded is not None else None
    if replica is not None:
        return ReplicaNames(
            source=replica.source_database,
            target=replica.target_database,
            old=replica.old_database,
            forward=replica.forward,
            back=replica.back,
        )
    return replica_names(m.name, m.spec, m.params.dbname or "")
