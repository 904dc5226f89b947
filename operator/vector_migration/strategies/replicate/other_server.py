"""The other server (replicate.target): what it must give Replicate, and where the application goes afterwards.

On another server the new database is made from the source's schema, so every role that owns
or is granted something there must exist there too; Replicate never creates roles (a role's
password and attributes are the platform's to set: CloudNativePG's ``spec.managed.roles``).
"""

from __future__ import annotations

import asyncpg

from ...database.catalog import Blocker
from ...database.sql import ConnectionParams, DatabaseUnavailable
from ...engine.context import Migration
from ...vocabulary import Reason
from .facts import Capacity, capacity_blockers, name_blockers_on, server_blockers, sync_workers_per_subscription
from .names import ReplicaNames
from .sessions import maintenance

TARGET_LOGIN = "spec.replicate.target.secretRef, --target-database-url"

# Every role an object of the current database depends on (owner, privileges, policies, default
# privileges: pg_shdepend), the database's owner, and the roles its settings are for.
_SCHEMA_ROLES = """
SELECT DISTINCT r.rolname
  FROM pg_catalog.pg_roles r
 WHERE r.oid IN (SELECT refobjid FROM pg_catalog.pg_shdepend
                  WHERE refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                    AND dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
    OR r.oid = (SELECT datdba FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
    OR r.oid IN (SELECT setrole FROM pg_catalog.pg_db_role_setting
                  WHERE setdatabase = (SELECT oid FROM pg_catalog.pg_database
                                        WHERE datname = pg_catalog.current_database()))
 ORDER BY 1
"""


async def target_server_blockers(m: Migration, names: ReplicaNames, migration: str) -> list[Blocker]:
    """What keeps the other server from taking the new database: each with what to do, all at once."""
    server = m.inputs.target_server
    if server is None:
        return []
    roles = [r["rolname"] for r in await m.session.fetch(_SCHEMA_ROLES)]
    try:
        async with maintenance(m, server) as conn:
            found = await _target_blockers(conn, m, names, migration, roles)
    except DatabaseUnavailable as error:
        return [Blocker(Reason.DATABASE_UNAVAILABLE, f"the target server: {error}")]
    return [Blocker(b.reason, f"on the target server: {b.message}") for b in found]


async def _target_blockers(
    conn: asyncpg.Connection, m: Migration, names: ReplicaNames, migration: str, roles: list[str]
) -> list[Blocker]:
    sync_workers = await sync_workers_per_subscription(conn)
    # It subscribes to the copy (a worker per table copied at a time) and publishes the channel back.
    capacity = Capacity(slots=1, workers=2, origins=1 + sync_workers)
    blockers = [
        *await server_blockers(conn, TARGET_LOGIN),
        *await capacity_blockers(conn, capacity),
        *await name_blockers_on(conn, names, migration, [names.target]),
    ]
    extension = m.spec.target.extension
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = $1)", extension
    ):
        blockers.append(
            Blocker(Reason.TARGET_EXTENSION_UNAVAILABLE, f"extension {extension} is not available (install it there)")
        )
    present = {
        r["rolname"]
        for r in await conn.fetch("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])", roles)
    }
    missing = [role for role in roles if role not in present]
    if missing:
        blockers.append(
            Blocker(
                Reason.INSUFFICIENT_PRIVILEGE,
                f"role(s) {', '.join(missing)} own or are granted objects of the database and do not exist there; "
                "create them (CloudNativePG: spec.managed.roles), with the passwords the application uses",
            )
        )
    return blockers


def endpoint(server: ConnectionParams, database: str) -> str:
    """Where the application connects after the switchover: host:port/database."""
    return f"{server.host or 'localhost'}:{server.port or 5432}/{database}"
