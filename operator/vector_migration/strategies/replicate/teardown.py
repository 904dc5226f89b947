"""Taking replication apart: a subscription, its slot, its publication, and a database nobody needs.

Every function here is idempotent (each object is dropped only when it exists), so an interrupted
tear-down finishes on the next run. A slot is never left behind: one nobody consumes keeps WAL
forever and fills the server's disk.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ...database.sql import ConnectionParams
from ...engine.context import Migration, as_admin
from .names import ReplicaNames
from .plan import DROP_SLOT, END_WALSENDER, unsubscribe
from .plan import connection_limit as connection_limit_sql
from .plan import drop_database as drop_database_sql
from .plan import drop_publication as drop_publication_sql
from .sessions import maintenance, on_database


async def database_exists(conn: asyncpg.Connection, database: str) -> bool:
    """Whether a database of that name exists on the server."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)", database)
    )


async def subscribed(conn: asyncpg.Connection, name: str) -> bool:
    """Whether the session's database has a subscription of that name (subscriptions are named per database)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1 AND subdbid = "
            "(SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))",
            name,
        )
    )


async def drop_subscription(m: Migration, database: str, name: str, server: ConnectionParams | None = None) -> None:
    """Drop the subscription ``name`` in ``database`` of ``server`` (the source's by default; its slot stays).

    Subscriptions are a shared catalog: whether there is one is read without reaching the database
    (which a switchover back may have closed for good).
    """
    async with maintenance(m, server) as admin:
        exists = await admin.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d "
            "ON d.oid = s.subdbid WHERE s.subname = $1 AND d.datname = $2)",
            name,
            database,
        )
        if not exists:
            return
    async with on_database(m, database, server=server) as there, as_admin(there):
        if await subscribed(there.session, name):
            for statement in unsubscribe(name):
                await there.session.execute(statement)


async def drop_slot(m: Migration, name: str, database: str, server: ConnectionParams | None = None) -> None:
    """Drop the replication slot ``name`` of ``database`` on ``server``, ending the walsender that holds it first."""
    async with maintenance(m, server) as admin:
        for _ in range(50):
            row = await admin.fetchrow(
                "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND database = $2",
                name,
                database,
            )
            if row is None:
                return
            if row["active_pid"] is not None:
                await admin.execute(END_WALSENDER, row["active_pid"])  # the plan's (channel_teardown)
                await asyncio.sleep(0.1)
                continue
            try:
                await admin.execute(DROP_SLOT, name)
                return
            except asyncpg.ObjectInUseError:
                await asyncio.sleep(0.1)  # a walsender took it again between the two statements
        raise RuntimeError(f"replication slot {name} stayed in use; drop it with pg_drop_replication_slot")


async def drop_publication(m: Migration, database: str, name: str, server: ConnectionParams | None = None) -> None:
    """Drop the publication ``name`` in ``database`` of ``server``, if both exist."""
    async with maintenance(m, server) as admin:
        if not await database_exists(admin, database):
            return
    async with on_database(m, database, server=server) as there, as_admin(there):
        await there.session.execute(drop_publication_sql(name))


async def drop_database(
    m: Migration, database: str, marker: str | None, server: ConnectionParams | None = None
) -> None:
    """Drop a database this migration made, ending its sessions (WITH (FORCE)).

    With a ``marker``, only while the database still carries it as its comment: a database of that
    name that someone else made is never dropped.
    """
    async with maintenance(m, server) as admin:
        comment = await admin.fetchrow(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database') AS comment FROM pg_catalog.pg_database "
            "WHERE datname = $1",
            database,
        )
        if comment is None or (marker is not None and comment["comment"] != marker):
            return
        await admin.execute(drop_database_sql(database))  # the plan's (afterKeepOldFor, onRollback)


async def carries_marker(m: Migration, database: str, marker: str, server: ConnectionParams | None = None) -> bool:
    """Whether the database exists on ``server`` with this migration's marker as its comment (made by it)."""
    async with maintenance(m, server) as admin:
        comment = await admin.fetchval(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database WHERE datname = $1",
            database,
        )
    return bool(comment == marker)


async def tear_down_replica(m: Migration, names: ReplicaNames, migration: str, connection_limit: int | None) -> None:
    """Before the switchover: the channels and the new database go; the source is as it was.

    Across servers a switchover cut off before its record may have made the channel back and
    fenced the source: both are undone too (the fence by giving back ``connection_limit``).
    """
    elsewhere = m.inputs.target_server
    if await carries_marker(m, names.target, names.marker(migration), elsewhere):
        await drop_subscription(m, names.target, names.forward, elsewhere)
    await drop_slot(m, names.forward, names.source)
    await drop_publication(m, names.source, names.forward)
    if names.across_servers:
        await drop_subscription(m, names.source, names.back)
        await drop_slot(m, names.back, names.target, elsewhere)
    await drop_database(m, names.target, names.marker(migration), elsewhere)
    if names.across_servers and connection_limit is not None:
        await unfence(m, names.source, connection_limit)


async def unfence(m: Migration, database: str, connection_limit: int, server: ConnectionParams | None = None) -> None:
    """Give a database fenced with CONNECTION LIMIT 0 its limit back (when it is still fenced)."""
    async with maintenance(m, server) as admin:
        fenced = await admin.fetchval(
            "SELECT datconnlimit = 0 FROM pg_catalog.pg_database WHERE datname = $1", database
        )
        if fenced:
            await admin.execute(connection_limit_sql(database, connection_limit))


async def stop_reverse_replication(m: Migration, names: ReplicaNames) -> None:
    """After keepOldFor: the old database stops following the new one (its channel goes)."""
    await drop_subscription(m, names.old, names.back)
    if names.across_servers:
        await drop_slot(m, names.back, names.target, m.inputs.target_server)
        await drop_publication(m, names.target, names.back, m.inputs.target_server)
    else:
        await drop_slot(m, names.back, names.source)
        await drop_publication(m, names.source, names.back)
