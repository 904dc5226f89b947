"""Learn the target's SQL surface without changing the database, and which checksum is valid."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from ..database.catalog import (
    SourceInventory,
    VectorColumn,
    read_extension,
)
from ..database.ddl import create_extension_sql
from ..database.measure import (
    BINARY,
    NORMALIZED,
    TEXT,
    prints_identically,
    send_function,
    sends_identically,
)
from ..database.sql import (
    ConnectionParams,
    DatabaseUnavailable,
    connect,
    qualify,
    quote_ident,
)
from ..database.surface import MappingError, TargetSurface, discover, map_type, source_library
from ..engine.context import Migration, as_admin
from ..engine.plan import column_key
from ..vocabulary import (
    Reason,
)


class ProbeFailed(RuntimeError):
    """The target cannot be probed; carries the reason the checklist reports."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# size: two routes (a rolled-back transaction, else a scratch database), each with its cleanup
async def probe_surface(
    m: Migration,
    inventory: SourceInventory,
    target_schema: str,
    can_create_database: bool,
    elsewhere: ConnectionParams | None = None,
) -> TargetSurface:
    """Learn the target's SQL surface without changing the database.

    Tried first inside a transaction that is always rolled back. When the target's names
    collide with the source's, it cannot be created beside it, so it is created alone in a
    scratch database instead (which needs CREATEDB), then that database is dropped. With
    ``elsewhere`` (Replicate's other server, where the target is installed and the source server
    may not have it), the scratch database is made there. Either way, sampled source values
    are printed through the target type to learn whether the cheap text checksum is valid (see
    measure.table_checksum).
    """
    conn = m.session
    source = inventory.source
    target = m.spec.target.extension
    library = m.facts.source_library = await source_library(conn, source.oid)
    # An array column is always compared by its printed form (measure.table_checksum): no samples.
    samples = {c: await _value_samples(conn, c) for c in inventory.columns if not c.array}
    if elsewhere is not None:
        return await _probe_in_scratch(m, inventory, target_schema, samples, elsewhere)
    installed = await read_extension(conn, target)
    if installed is not None:
        surface = await discover(conn, target, library, collides=False)
        await _choose_checksum_mode(m, conn, surface, samples)
        return surface
    create = create_extension_sql(target, m.spec.target.version, target_schema)
    transaction = conn.transaction()
    await transaction.start()
    try:
        # As the admin login, if any: the rollback below takes the role back with everything else.
        async with as_admin(m):
            if target_schema != source.schema:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(target_schema)}")
            await conn.execute(create)
        surface = await discover(conn, target, library, collides=False)
        await _choose_checksum_mode(m, conn, surface, samples)
        return surface
    except (asyncpg.DuplicateObjectError, asyncpg.DuplicateFunctionError, asyncpg.DuplicateTableError):
        pass  # names collide with the source's: probe alone in a scratch database below
    except asyncpg.PostgresError as error:
        raise _create_failed(m, error) from None
    finally:
        await transaction.rollback()
    if not can_create_database:
        raise ProbeFailed(
            Reason.INSUFFICIENT_PRIVILEGE,
            f"extension {target} uses names that collide with {source.name}'s; planning its conversion needs "
            "CREATEDB to inspect it in a scratch database (grant CREATEDB to the migration role)",
        )
    return await _probe_in_scratch(m, inventory, target_schema, samples, None)


async def _probe_in_scratch(
    m: Migration,
    inventory: SourceInventory,
    target_schema: str,
    samples: dict[VectorColumn, list[tuple[str, bytes]]],
    elsewhere: ConnectionParams | None,
) -> TargetSurface:
    """The target created alone in a scratch database (of ``elsewhere``, else the source's server), then dropped."""
    target = m.spec.target.extension
    create = create_extension_sql(target, m.spec.target.version, target_schema)
    server = elsewhere or m.inputs.admin_params or m.params
    scratch = _scratch_database_name(inventory.server.database)
    async with _server_session(m, elsewhere) as admin:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)}")
        await admin.execute(f"CREATE DATABASE {quote_ident(scratch)} TEMPLATE template0")
    try:
        probe = await connect(server.with_database(scratch))
        try:
            await probe.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(target_schema)}")
            await probe.execute(create)
            surface = await discover(probe, target, m.facts.source_library, collides=True)
            await _choose_checksum_mode(m, probe, surface, samples)
            return surface
        except asyncpg.PostgresError as error:
            raise _create_failed(m, error) from None
        finally:
            await probe.close()
    finally:
        async with _server_session(m, elsewhere) as admin:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)}")


def _create_failed(m: Migration, error: asyncpg.PostgresError) -> ProbeFailed:
    """Why the target cannot be created; a privilege it lacks is the login's to fix, and said so."""
    target = m.spec.target.extension
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        # RuVector 2.0.6 declares superuser = false, yet its script creates C functions, which only a
        # superuser may: the catalog's flags cannot tell beforehand (docs/ruvector-findings.md).
        login = m.inputs.admin_params.user if m.inputs.admin_params else m.params.user
        return ProbeFailed(
            Reason.INSUFFICIENT_PRIVILEGE,
            f"CREATE EXTENSION {target} fails as role {login}: {error}; creating it needs a superuser although "
            "its control file does not say so (an admin login for the extension alone: "
            "spec.database.adminSecretRef, --admin-database-url)",
        )
    return ProbeFailed(Reason.TARGET_EXTENSION_UNAVAILABLE, f"CREATE EXTENSION {target} fails: {error}")


@contextlib.asynccontextmanager
async def _server_session(m: Migration, elsewhere: ConnectionParams | None) -> AsyncIterator[asyncpg.Connection]:
    """Where a scratch database is made and dropped: the other server's maintenance database, else the session."""
    if elsewhere is None:
        async with as_admin(m):
            yield m.session
        return
    try:
        conn = await connect(elsewhere.with_database("postgres"))
    except DatabaseUnavailable as error:
        raise ProbeFailed(Reason.DATABASE_UNAVAILABLE, f"the target server: {error}") from None
    try:
        yield conn
    finally:
        await conn.close()


def _scratch_database_name(database: str) -> str:
    """A deterministic scratch database name (63 bytes at most, whatever the database is called)."""
    import hashlib

    return "vmig_probe_" + hashlib.sha256(database.encode()).hexdigest()[:16]


async def _value_samples(conn: asyncpg.Connection, column: VectorColumn) -> list[tuple[str, bytes]]:
    """Up to 200 values of a column, as printed and as sent by the source type."""
    send = await send_function(conn, qualify(column.type_schema, column.type_name))
    sent = f"{send}({quote_ident(column.column)})" if send else "NULL::pg_catalog.bytea"
    rows = await conn.fetch(
        f"SELECT {quote_ident(column.column)}::pg_catalog.text, {sent} FROM {column.qualified_table} "
        f"WHERE {quote_ident(column.column)} IS NOT NULL LIMIT 200"
    )
    return [(row[0], row[1]) for row in rows]


async def _choose_checksum_mode(
    m: Migration,
    conn: asyncpg.Connection,
    surface: TargetSurface,
    samples: dict[VectorColumn, list[tuple[str, bytes]]],
) -> None:
    """The cheapest checksum the samples show to be valid: binary, else text, else parsed values.

    Binary when the target sends every sampled value exactly as the source did, text when it
    prints them exactly as the source did. A wrong choice cannot pass unnoticed: a checksum
    that differs rolls the swap back, and it is retried once with parsed values.
    """
    binary = True
    requested = m.facts.chosen_column_types(m.spec)
    for column, values in samples.items():
        try:
            target_type = map_type(surface, column, requested.get(column_key(column)))
        except MappingError:
            m.facts.checksum_mode = NORMALIZED
            return  # the planner reports the unmapped column
        type_sql = qualify(target_type.schema, target_type.name)
        async with conn.transaction():
            if not await prints_identically(conn, [text for text, _ in values], type_sql):
                m.facts.checksum_mode = NORMALIZED
                return
            binary = binary and all(sent is not None for _, sent in values)
            binary = binary and await sends_identically(conn, values, type_sql)
    m.facts.checksum_mode = BINARY if binary else TEXT
