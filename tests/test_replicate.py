"""The Replicate strategy: a new database fed by logical replication, switched in under the application's name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.application import application_writing, create_shop, docs_before, final_equals_every_committed_change
from tests.scenarios import condition, manifest, migration
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres, create_database
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase

REPLICATE = {"strategy": "Replicate", "backup": {"enabled": False}, "replicate": {"keepOldFor": "1h"}}


@pytest.fixture(scope="module")
def logical_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A server of its own with wal_level = logical (changing it needs a restart)."""
    import asyncio

    server = EmbeddedPostgres(tmp_path_factory.mktemp("logical") / "data")

    async def logical() -> None:
        params = server.params()
        conn = await asyncpg.connect(host=params.host, port=params.port, user=params.user, database="postgres")
        await conn.execute("ALTER SYSTEM SET wal_level = logical")
        await conn.close()

    asyncio.run(logical())
    server.restart()
    yield server
    server.stop()


_numbers = iter(range(1, 1000))


@pytest.fixture
async def shop(logical_server: EmbeddedPostgres) -> AsyncIterator[ConnectionParams]:
    name = f"shop_{next(_numbers)}"
    await create_database(logical_server.params(), name)
    params = logical_server.params(name)
    conn = await asyncpg.connect(host=params.host, port=params.port, user=params.user, database=name)
    try:
        await create_shop(conn)
    finally:
        await conn.close()
    yield params


async def session(params: ConnectionParams, database: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=params.host, port=params.port, user=params.user, database=database or params.dbname
    )


async def slots(params: ConnectionParams) -> list[str]:
    conn = await session(params, "postgres")
    try:
        return [r["slot_name"] for r in await conn.fetch("SELECT slot_name FROM pg_replication_slots")]
    finally:
        await conn.close()


async def test_the_application_writes_through_copy_and_switchover_and_loses_nothing(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    conn = await session(shop)
    before = await docs_before(conn)
    await conn.close()
    m = migration(shop, manifest(**REPLICATE), backup_dir)
    async with application_writing(shop, reconnect=True) as committed:
        status = await run(m, reconnect_for=30)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert committed[0] > 0
    conn = await session(shop)
    try:
        assert await conn.fetchval("SELECT extname FROM pg_extension WHERE extname = 'vector'") is None
        assert "ruvector" in await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding'"
        )
        await final_equals_every_committed_change(conn, before)
    finally:
        await conn.close()
    old = await session(shop, f"{shop.dbname}_pgvector_old")
    try:
        assert await old.fetchval("SELECT extname FROM pg_extension WHERE extname = 'vector'") == "vector"
    finally:
        await old.close()
    assert status.replicate is not None and status.replicate.switchover_seconds is not None
    assert condition(status, "Ready").status == "True"
    print("switchover", status.replicate.switchover_seconds, "committed", committed[0], await slots(shop))
