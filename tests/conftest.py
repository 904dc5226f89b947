"""Real parts only: one embedded PostgreSQL 18 + pgvector per session, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.builds import built
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres, create_database
from vector_migration.demo.real import RealRuvectorMissing, RealRuvectorServer, built_pg_config

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    yield server
    server.stop()


def _logical(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[EmbeddedPostgres]:
    from tests.replication import make_logical

    server = EmbeddedPostgres(tmp_path_factory.mktemp(name) / "data")
    make_logical(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def logical_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A second server, with wal_level = logical, for the Replicate scenarios (tests/replication.py)."""
    yield from _logical(tmp_path_factory, "logical")


@pytest.fixture(scope="session")
def other_logical_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A third server, with wal_level = logical: where Replicate's replicate.target scenarios make the new database."""
    yield from _logical(tmp_path_factory, "other")


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After a full, green run: the chart grants the operator nothing that no test saw it use.

    Each operator test checks that every request it saw is allowed by the chart's ClusterRole; this
    is the converse, over all of them, so a grant without a use fails the run (least privilege).
    """
    from tests.chart import OBSERVED_REQUESTS, unused_grants

    selected = session.config.invocation_params.args
    full_run = not any(not arg.startswith("-") for arg in selected) and not session.config.option.keyword
    if exitstatus != 0 or not full_run or not OBSERVED_REQUESTS:
        return
    unused = unused_grants(OBSERVED_REQUESTS)
    if unused:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"RBAC: the chart grants what no operator test used: {', '.join(unused)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="module")
def ruvector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRuvectorServer]:
    """PostgreSQL 16 with pgvector and the real RuVector, from the pgserver `make ruvector` unpacked; logical WAL."""
    pg_config = built(built_pg_config, RealRuvectorMissing, "VMIG_REQUIRE_RUVECTOR")
    server = RealRuvectorServer(pg_config, tmp_path_factory.mktemp("pg16") / "data", logical=True)
    yield server
    server.stop()
