"""Replicate's other sessions: on the new database, the old one, and each server's maintenance database.

On the source's server each logs in as the control session does (the admin login when there is
one, acting as the application's role), so statements that run other roles' code run as they
would on the source. On another server (replicate.target) they log in as its superuser login,
acting as the application's role too.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import asyncpg

from ...database.sql import ConnectionParams, connect
from ...engine.context import Migration, as_admin, call_timeout
from ...engine.records import Journal
from .names import ReplicaNames, replica_names
from .recorded import ReplicaRecord, replica_recorded

MAINTENANCE_DATABASE = "postgres"
# Where the maintenance session goes when the application's database is postgres itself. The engine
# makes its databases from template0, so a session here delays no CREATE DATABASE of its own.
OTHER_MAINTENANCE_DATABASE = "template1"


def login(m: Migration) -> ConnectionParams:
    """The login that makes databases, slots and subscriptions on the source's server: the admin's, else the own."""
    return m.inputs.admin_params or m.params


def target_login(m: Migration) -> ConnectionParams:
    """The login on the new database's server: replicate.target's, else the source server's."""
    return m.inputs.target_server or login(m)


def across_servers(m: Migration) -> bool:
    """Whether the new database is on another server (replicate.target)."""
    return m.inputs.target_server is not None


@contextlib.asynccontextmanager
async def on_database(
    m: Migration, database: str, *, server: ConnectionParams | None = None
) -> AsyncIterator[Migration]:
    """The migration as seen from another database (of ``server``, else the source's): its session, the same status.

    The returned Migration shares the run's status, facts and decisions; only its session (and the
    parameters an index build's progress watcher connects with) differ.
    """
    params = (server or login(m)).with_database(database)
    conn = await connect(params, command_timeout=call_timeout(m.spec.statement_timeout))
    try:
        # The application's role acts here as on the source (on another server the checklist found it there).
        if m.acting_role is not None:
            await conn.execute("SELECT pg_catalog.set_config('role', $1, false)", m.acting_role)
        own = m.params.with_database(database) if server is None else params
        inputs = dataclasses.replace(m.inputs, params=own, heartbeat=None)
        yield dataclasses.replace(m, inputs=inputs, conn=conn, heartbeat=None)
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5.0)


def on_new_database(m: Migration, names: ReplicaNames) -> contextlib.AbstractAsyncContextManager[Migration]:
    """The new database's session, where it is until the switchover (on the target's server)."""
    return on_database(m, names.target, server=m.inputs.target_server)


@contextlib.asynccontextmanager
async def maintenance(m: Migration, server: ConnectionParams | None = None) -> AsyncIterator[asyncpg.Connection]:
    """A session on a server's maintenance database (the source's by default), with the login's own privileges.

    Never on the application's own database: the switchover fences and renames it from here, and
    PostgreSQL refuses both for the database a session is on (Supabase keeps its data in postgres).
    """
    params = server or login(m)
    database = MAINTENANCE_DATABASE if params.dbname != MAINTENANCE_DATABASE else OTHER_MAINTENANCE_DATABASE
    conn = await connect(params.with_database(database), command_timeout=60.0)
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


async def names_of(m: Migration, recorded: Journal | None = None) -> ReplicaNames:
    """The migration's names: as recorded once the new database exists, else derived for the session's database."""
    replica: ReplicaRecord | None = replica_recorded(recorded) if recorded is not None else None
    if replica is not None:
        return ReplicaNames(
            source=replica.source_database,
            target=replica.target_database,
            old=replica.old_database,
            forward=replica.forward,
            back=replica.back,
            across_servers=replica.endpoint is not None,
        )
    return derived_names(m, await m.session.fetchval("SELECT pg_catalog.current_database()"))


def derived_names(m: Migration, source_database: str) -> ReplicaNames:
    """The names this run gives what it creates for ``source_database``."""
    return replica_names(m.name, m.spec, source_database, across_servers=across_servers(m))
