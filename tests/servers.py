"""A test server of its own with settings PostgreSQL reads only at start (ALTER SYSTEM, then a restart)."""

from __future__ import annotations

import asyncio

import asyncpg

from vector_migration.demo import EmbeddedPostgres


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
