"""Real parts only: one embedded PostgreSQL 18 + pgvector per session, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from vector_migration.demo import EmbeddedPostgres, create_database
from vector_migration.sql import ConnectionParams

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    yield server
    server.stop()


@pytest.fixture
async def database(postgres: EmbeddedPostgres) -> ConnectionParams:
    """An empty database of its own for each test."""
    name = f"test_{next(_numbers)}"
    await create_database(postgres.params(), name)
    return postgres.params(name)


@pytest.fixture
async def conn(database: ConnectionParams) -> AsyncIterator[asyncpg.Connection]:
    """A plain session for arranging and inspecting the database (default search_path)."""
    connection = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    yield connection
    await connection.close()


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    return tmp_path / "backups"
