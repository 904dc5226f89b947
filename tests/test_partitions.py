"""Partitioned tables migrate, and nothing of their tree is lost.

Large embedding tables are the ones people partition: here by tenant (LIST, with a default
partition), and one tenant again by time (RANGE). The vector index on the parent has one index per
partition, attached to it; one of those was renamed by a person, and one partition has an index of
its own, attached to nothing. After the migration the tree is read back with queries of these
tests' own: the same partitions with the same bounds, every column of the tree on the target type,
every index under its name, attached where it was, valid, on the target's access method, and every
row in the partition it was in.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.replication import REPLICATE, session
from tests.scenarios import manifest, migration, snapshot
from tests.test_catalog_invariant import plant
from vector_migration.database.catalog_compare import Expected, compare
from vector_migration.database.catalog_state import read_catalog
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres, create_database
from vector_migration.engine.context import close_session
from vector_migration.engine.runner import drive, run
from vector_migration.vocabulary import Phase, Reason

PARTITIONED = """
CREATE EXTENSION vector;
CREATE TABLE docs (id bigint NOT NULL, tenant text NOT NULL, created date NOT NULL, body text, embedding vector(4),
                   PRIMARY KEY (tenant, id, created)) PARTITION BY LIST (tenant);
CREATE TABLE docs_acme PARTITION OF docs FOR VALUES IN ('acme') PARTITION BY RANGE (created);
CREATE TABLE docs_acme_2025 PARTITION OF docs_acme FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE docs_acme_2026 PARTITION OF docs_acme FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE docs_globex PARTITION OF docs FOR VALUES IN ('globex');
CREATE TABLE docs_rest PARTITION OF docs DEFAULT;
CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding vector_l2_ops) WITH (m = 8);
ALTER INDEX docs_globex_embedding_idx RENAME TO "Globex HNSW";
CREATE INDEX acme_2026_cosine ON docs_acme_2026 USING hnsw (embedding vector_cosine_ops);
INSERT INTO docs
  SELECT i, (ARRAY['acme', 'globex', 'initech'])[1 + i % 3], DATE '2025-03-01' + (i * 5), 'doc ' || i,
         CASE WHEN i % 11 = 0 THEN NULL ELSE ARRAY[i % 7, i % 5, i % 3, 1]::real[]::vector END
    FROM generate_series(1, 120) i;
"""

_numbers = itertools.count(1)


async def partition_tree(conn: asyncpg.Connection) -> set[tuple[Any, ...]]:
    """Each relation of docs' tree: its parent, whether it is a leaf, its bound and its partition key."""
    rows = await conn.fetch(
        """
        SELECT t.relid::regclass::text AS name, t.parentrelid::regclass::text AS parent, t.isleaf, t.level,
               pg_get_expr(c.relpartbound, c.oid) AS bound, pg_get_partkeydef(c.oid) AS key
          FROM pg_partition_tree('docs') t JOIN pg_class c ON c.oid = t.relid
        """
    )
    return {tuple(r) for r in rows}


async def column_types(conn: asyncpg.Connection) -> dict[str, str]:
    """The embedding column's type in every relation of the tree."""
    rows = await conn.fetch(
        """
        SELECT t.relid::regclass::text AS name, format_type(a.atttypid, a.atttypmod) AS type
          FROM pg_partition_tree('docs') t JOIN pg_attribute a ON a.attrelid = t.relid AND a.attname = 'embedding'
        """
    )
    return {r["name"]: r["type"] for r in rows}


async def vector_indexes(conn: asyncpg.Connection) -> dict[str, tuple[str, str | None, str, bool]]:
    """Every non-btree index in the tree: name -> (its table, the index it is attached to, method, valid)."""
    rows = await conn.fetch(
        """
        SELECT ic.relname, i.indrelid::regclass::text AS tab,
               (SELECT h.inhparent::regclass::text FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) AS parent,
               am.amname, i.indisvalid
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
         WHERE i.indrelid IN (SELECT relid FROM pg_partition_tree('docs')) AND am.amname <> 'btree'
        """
    )
    return {r["relname"]: (r["tab"], r["parent"], r["amname"], r["indisvalid"]) for r in rows}


STRATEGIES = [
    pytest.param({"strategy": "InPlace"}, id="InPlace-Atomic"),
    pytest.param({"strategy": "InPlace", "reindex": {"mode": "Concurrent"}}, id="InPlace-Concurrent"),
    pytest.param({"strategy": "Rebuild"}, id="Rebuild"),
]


async def _migrates_the_tree(params: ConnectionParams, spec: dict[str, Any], tmp_path: Path) -> None:
    conn = await session(params)
    try:
        await conn.execute(PARTITIONED)
        tree, rows, indexes = await partition_tree(conn), (await snapshot(conn)).rows, await vector_indexes(conn)
    finally:
        await conn.close()  # Replicate's switchover ends the application's sessions
    # the parent's, the sub-parent's, one per leaf (4), and one leaf's own
    assert len(tree) == 6 and len(indexes) == 7
    assert len(rows) == 4 and all(rows.values())

    status = await run(migration(params, manifest(**spec), tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    conn = await session(params)
    try:
        assert await partition_tree(conn) == tree
        assert set((await column_types(conn)).values()) == {"ruvector(4)"}
        after = await vector_indexes(conn)
        assert after == {name: (tab, parent, "ruhnsw", True) for name, (tab, parent, _, _) in indexes.items()}
        assert (await snapshot(conn)).rows == rows  # every row, in the partition it was in
        nearest = await conn.fetch("SELECT id FROM docs ORDER BY embedding <-> '[1,1,1,1]' LIMIT 3")
        assert len(nearest) == 3
    finally:
        await conn.close()
    catalog = status.verification.catalog if status.verification else None
    assert catalog is not None and not catalog.differences, catalog


@pytest.mark.parametrize("spec", STRATEGIES)
async def test_a_table_partitioned_by_tenant_and_time_migrates_whole(
    spec: dict[str, Any], database: ConnectionParams, tmp_path: Path
) -> None:
    await _migrates_the_tree(database, spec, tmp_path)


async def test_replicate_migrates_a_partitioned_table_whole(logical_server: EmbeddedPostgres, tmp_path: Path) -> None:
    name = f"partitioned_{next(_numbers)}"
    await create_database(logical_server.params(), name)
    await _migrates_the_tree(logical_server.params(name), {**REPLICATE, "replicate": {"keepOldFor": "0s"}}, tmp_path)


async def test_a_partition_bound_changed_inside_the_migration_fails_it_with_nothing_changed(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    # The catalog invariant covers the tree: a partition gone from it is a loss the plan does not make.
    await conn.execute(PARTITIONED)
    tree, before = await partition_tree(conn), await snapshot(conn)
    # detached, and attached again with a wider bound: the tree's shape is the same, one bound is not
    await plant(
        conn,
        "ALTER TABLE public.docs_acme DETACH PARTITION public.docs_acme_2025; "
        "ALTER TABLE public.docs_acme ATTACH PARTITION public.docs_acme_2025 "
        "FOR VALUES FROM ('2024-01-01') TO ('2026-01-01')",
    )

    status = await run(migration(database, manifest(strategy="InPlace"), tmp_path / "b"))

    assert status.phase is Phase.FAILED, status.message
    assert status.conditions[0].reason == Reason.CATALOG_MISMATCH, status.message
    assert '"public"."docs_acme_2025"' in status.message and "nothing changed" in status.message
    await conn.execute("DROP EVENT TRIGGER plant_loss")
    assert await partition_tree(conn) == tree
    assert await snapshot(conn) == before


@pytest.mark.parametrize("spec", STRATEGIES[::2])
async def test_a_rollback_gives_the_partitioned_tree_back_whole(
    spec: dict[str, Any], database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(PARTITIONED)
    catalog, before, indexes = await read_catalog(conn), await snapshot(conn), await vector_indexes(conn)
    resource = manifest(**spec)
    status = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s"))
    assert status.phase is Phase.SUCCEEDED, status.message

    rolled = await run(migration(database, resource, tmp_path / "b", status=status, rollback=True))

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    assert compare(catalog, await read_catalog(conn), Expected()).differences == ()
    assert await vector_indexes(conn) == indexes
    assert (await snapshot(conn)).rows == before.rows


async def test_parallel_refuses_a_partitioned_table_at_the_checklist_naming_what_migrates_it(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(PARTITIONED)
    before = await snapshot(conn)

    status = await run(migration(database, manifest(strategy="Parallel"), tmp_path / "b"))

    assert status.phase is Phase.FAILED, status.message
    assert "table public.docs cannot move through a shadow: it is partitioned" in status.message
    assert "InPlace, Rebuild and Replicate migrate partitioned tables" in status.message
    assert await snapshot(conn) == before


class CutOff(BaseException):
    """The process ending between two index builds."""


async def test_replicate_cut_off_between_a_partitioned_index_and_its_partitions_continues(
    logical_server: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The index made ON ONLY the parent stays INVALID until its partitions' are attached: the next
    # run keeps it (it cannot be dropped CONCURRENTLY), builds the rest and attaches them.
    from vector_migration.strategies.replicate import stream

    name = f"partitioned_{next(_numbers)}"
    await create_database(logical_server.params(), name)
    params = logical_server.params(name)
    conn = await session(params)
    try:
        await conn.execute(PARTITIONED)
        indexes = await vector_indexes(conn)
    finally:
        await conn.close()
    built: list[str] = []
    real = stream.build_index

    async def cut_off_after_the_parents(*args: Any, **kwargs: Any) -> bool:
        if "docs_embedding_hnsw" in built:
            raise CutOff
        built.append(args[2])
        return await real(*args, **kwargs)

    monkeypatch.setattr(stream, "build_index", cut_off_after_the_parents)
    resource = manifest(**{**REPLICATE, "replicate": {"keepOldFor": "0s"}})
    first = migration(params, resource, tmp_path / "b")
    with pytest.raises(CutOff):
        await drive(first)
    await close_session(first)
    monkeypatch.setattr(stream, "build_index", real)
    assert built == ["acme_2026_cosine", "docs_embedding_hnsw"]  # a partition's own, then the parent's ON ONLY

    status = await run(migration(params, resource, tmp_path / "b"), reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    conn = await session(params)
    try:
        after = await vector_indexes(conn)
        assert after == {n: (tab, parent, "ruhnsw", True) for n, (tab, parent, _, _) in indexes.items()}
    finally:
        await conn.close()


async def test_a_foreign_table_partition_is_refused_by_name_with_nothing_changed(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    # ALTER TABLE would change only the foreign table's declared type: its rows are on another server.
    await conn.execute(
        "CREATE EXTENSION vector; CREATE TABLE docs (tenant text, embedding vector(4)) PARTITION BY LIST (tenant);"
        "CREATE TABLE docs_here PARTITION OF docs FOR VALUES IN ('acme');"
        "CREATE FOREIGN DATA WRAPPER vmig_test_fdw; CREATE SERVER vmig_elsewhere FOREIGN DATA WRAPPER vmig_test_fdw;"
        "CREATE FOREIGN TABLE docs_remote PARTITION OF docs FOR VALUES IN ('umbrella') SERVER vmig_elsewhere"
    )
    before = await partition_tree(conn)

    status = await run(migration(database, manifest(strategy="InPlace"), tmp_path / "b"))

    assert status.phase is Phase.FAILED, status.message
    assert "column public.docs_remote.embedding belongs to a foreign table" in status.message
    assert await partition_tree(conn) == before
    assert set((await column_types(conn)).values()) == {"vector(4)"}
