"""What real client libraries create migrates on every surface with every strategy, and still answers.

Each schema of tests/client_schemas.py (langchain-postgres, LlamaIndex, Django, Supabase) runs on
the three stand-in surfaces with InPlace, Rebuild, Parallel and Replicate. The only refusal allowed is the one
physics imposes: Parallel beside a target whose names collide with pgvector's. Otherwise the rows
are equal, and the library's own similarity query, run as the application's role, answers exactly
as before.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import asyncpg
import pytest

from tests.client_schemas import APP_ROLE, SCHEMAS, ClientSchema, grants
from tests.replication import session
from tests.scenarios import manifest, migration, snapshot
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres, create_database
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

SURFACES = ["ruvector_standin", "ruvector_script_standin", "ruvector_v2_standin"]
_databases = itertools.count(1)


async def as_the_application(conn: asyncpg.Connection, sql: str) -> list[tuple[object, ...]]:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
        return [tuple(row) for row in await conn.fetch(sql)]


async def create(conn: asyncpg.Connection, schema: ClientSchema) -> None:
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", APP_ROLE):
        await conn.execute(f"CREATE ROLE {APP_ROLE}")
    await conn.execute(schema.ddl)
    await conn.execute(grants(schema))


@pytest.mark.parametrize("target", SURFACES)
@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild", "Parallel"])
@pytest.mark.parametrize("client", list(SCHEMAS))
async def test_a_client_librarys_schema_migrates_and_its_search_answers_the_same(
    client: str, strategy: str, target: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = SCHEMAS[client]
    await create(conn, schema)
    before = await snapshot(conn)
    answers = await as_the_application(conn, schema.search)
    assert answers, "the search must find something before the migration"
    resource = manifest(target, strategy=strategy, parallel={"keepOldFor": "0s"})

    status = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s"))

    if strategy == "Parallel" and target != "ruvector_standin":
        assert status.phase is Phase.FAILED  # access methods are unique per database: physics
        assert status.conditions[0].reason == Reason.UNSUPPORTED_STRATEGY, status.message
        assert await snapshot(conn) == before
        return
    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows
    assert await as_the_application(conn, schema.search) == answers


@pytest.mark.parametrize("target", SURFACES)
@pytest.mark.parametrize("client", list(SCHEMAS))
async def test_a_client_librarys_schema_moves_to_a_new_database_and_its_search_answers_the_same(
    client: str, target: str, logical_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    # Replicate: the schema is copied and converted in a new database, compared with the source's at
    # every step (the catalog invariant), and switched in under the application's name.
    schema = SCHEMAS[client]
    name = f"client_{next(_databases)}"
    await create_database(logical_server.params(), name)
    database = logical_server.params(name)
    conn = await session(database)
    try:
        await create(conn, schema)
        before = await snapshot(conn)
        answers = await as_the_application(conn, schema.search)
    finally:
        await conn.close()
    resource = manifest(
        target, strategy="Replicate", backup={"enabled": False}, replicate={"keepOldFor": "0s", "dropOld": True}
    )

    status = await run(migration(database, resource, tmp_path / "b"), reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    catalog = status.verification.catalog if status.verification else None
    assert catalog is not None and not catalog.differences, catalog
    conn = await session(database)
    try:
        assert (await snapshot(conn)).rows == before.rows
        assert await as_the_application(conn, schema.search) == answers
    finally:
        await conn.close()
    # keepOldFor has passed: the old database and its replication go (the server's workers are few)
    assert (await run(migration(database, resource, tmp_path / "b"))).phase is Phase.SUCCEEDED
