"""Test servers of their own: settings PostgreSQL reads only at start (ALTER SYSTEM, then a restart), new databases."""

from __future__ import annotations

import asyncio

import asyncpg

from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres, create_database


def restart_with(server: EmbeddedPostgres, settings: dict[str, str]) -> None:
    """Set each setting with ALTER SYSTEM and restart the server, so start-only settings take effect."""

    async def configure() -> None:
        params = server.params()
        conn = await asyncpg.connect(host=params.host, port=params.port, user=params.user, database="postgres")
        try:
            for name, value in settings.items():
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        finally:
            await conn.close()

    asyncio.run(configure())
    server.restart()


async def new_database(server: EmbeddedPostgres, name: str) -> tuple[ConnectionParams, asyncpg.Connection]:
    """A new database on the server, and a plain session on it (the caller closes it)."""
    await create_database(server.params(), name)
    params = server.params(name)
    return params, await asyncpg.connect(host=params.host, port=params.port, user=params.user, database=name)
