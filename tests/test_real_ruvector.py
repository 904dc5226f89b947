"""The published RuVector, not a stand-in: what `make ruvector` builds, migrated to and back on PostgreSQL 16.

`make ruvector` builds ruvector-postgres 2.0.6 with cargo-pgrx 0.12.9 into PostgreSQL 16.2 with
pgvector 0.6.2 (the PyPI wheel pgserver); `.ci/run` runs it and names its `pg_config` in
VMIG_RUVECTOR_PG_CONFIG, and sets VMIG_REQUIRE_RUVECTOR so that these tests fail, rather than
skip, when the build is missing. A pgvector database is migrated with the engine as a user runs
it, checked in the database with queries of these tests' own, and rolled back.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.scenarios import manifest, migration, parse_vector
from vector_migration.database.sql import ConnectionParams, parse_database_url
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase

_databases = itertools.count(1)


def _pg_config() -> Path | None:
    named = os.environ.get("VMIG_RUVECTOR_PG_CONFIG")
    return Path(named) if named else None


@pytest.fixture(scope="module")
def ruvector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """PostgreSQL 16 with pgvector and the real RuVector, started from the pgserver `make ruvector` unpacked."""
    pg_config = _pg_config()
    if pg_config is None or not pg_config.exists():
        if os.environ.get("VMIG_REQUIRE_RUVECTOR"):
            pytest.fail("VMIG_REQUIRE_RUVECTOR is set but VMIG_RUVECTOR_PG_CONFIG names no build: run make ruvector")
        pytest.skip("the real RuVector is not built here (make ruvector; VMIG_RUVECTOR_PG_CONFIG)")
    home = pg_config.parents[3]  # <home>/pgserver/pginstall/bin/pg_config: the wheel's package is importable
    sys.path.insert(0, str(home))
    try:
        import pgserver  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(home))
    server = pgserver.get_server(tmp_path_factory.mktemp("pg16") / "data", cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
async def pg16(ruvector_server: Any) -> AsyncIterator[tuple[ConnectionParams, asyncpg.Connection]]:
    name = f"real_{next(_databases)}"
    admin = await asyncpg.connect(ruvector_server.get_uri())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    uri = ruvector_server.get_uri(database=name)
    conn = await asyncpg.connect(uri)
    yield parse_database_url(uri), conn
    await conn.close()


SHOP = """
CREATE EXTENSION vector;
CREATE TABLE items (id int PRIMARY KEY, body text, embedding vector(3));
INSERT INTO items SELECT i, 'item ' || i, ARRAY[cos(i), sin(i), (i % 7) / 7.0]::real[]::vector
  FROM generate_series(1, 2000) i;
CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX items_cosine ON items USING hnsw (embedding vector_cosine_ops);
COMMENT ON INDEX items_hnsw IS 'the search index';
CREATE TABLE parts (id int PRIMARY KEY, item int CONSTRAINT parts_item_fk REFERENCES items (id));
INSERT INTO parts SELECT i, i FROM generate_series(1, 50) i;
"""

SEARCH = "SELECT id FROM items ORDER BY embedding <-> '[1,0,0]', id LIMIT 5"


async def vectors(conn: asyncpg.Connection) -> dict[int, tuple[float, ...] | None]:
    """Every vector as numbers: the real text format need not be pgvector's, the values must be the same."""
    return {r["id"]: parse_vector(r["v"]) for r in await conn.fetch("SELECT id, embedding::text AS v FROM items")}


async def owner_of(conn: asyncpg.Connection, catalog: str, name_column: str, name: str) -> str | None:
    """The extension that owns a type or an access method, from pg_depend."""
    owner: str | None = await conn.fetchval(
        f"SELECT e.extname FROM {catalog} o JOIN pg_depend d ON d.objid = o.oid AND d.deptype = 'e' "
        f"JOIN pg_extension e ON e.oid = d.refobjid WHERE o.{name_column} = $1",
        name,
    )
    return owner


@pytest.mark.parametrize("mode", ["Atomic", "Concurrent"])
async def test_a_pgvector_database_moves_to_the_real_ruvector_and_back(
    mode: str, pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    params, conn = pg16
    await conn.execute(SHOP)
    before, answers = await vectors(conn), await conn.fetch(SEARCH)
    resource = manifest("ruvector", backup={"enabled": False}, reindex={"mode": mode})

    status = await run(migration(params, resource, tmp_path / "b"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await vectors(conn) == before
    assert await owner_of(conn, "pg_type", "typname", "ruvector") == "ruvector"
    assert await owner_of(conn, "pg_am", "amname", "hnsw") == "ruvector"  # RuVector's HNSW, under pgvector's name
    assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'ruvector'") == "0.3.0"
    assert await conn.fetchval("SELECT ruvector_version()") == "2.0.6"
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 0
    definition = await conn.fetchval("SELECT pg_get_indexdef('items_hnsw'::regclass)")
    assert "USING hnsw" in definition and "m='16'" in definition and "ef_construction='64'" in definition
    assert await conn.fetchval("SELECT obj_description('items_hnsw'::regclass, 'pg_class')") == "the search index"
    assert await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE conname = 'parts_item_fk'") == 1
    assert [r["id"] for r in await conn.fetch(SEARCH)] == [r["id"] for r in answers]
    catalog = status.verification.catalog if status.verification else None
    assert catalog is not None and not catalog.differences

    rolled = await run(migration(params, resource, tmp_path / "b", status=status, rollback=True))

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    assert await vectors(conn) == before
    assert await owner_of(conn, "pg_am", "amname", "hnsw") == "vector"
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'ruvector'") == 0
