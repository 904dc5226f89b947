"""`bench/run.py --only ruvector` (and a part of `make bench` when `make ruvector` has built it): the real RuVector.

On PostgreSQL 16 with pgvector 0.6.2 and ruvector-postgres 2.0.6 (`make ruvector`), on the same
clustered dataset as the rest of the bench, one HNSW index (m = 16, ef_construction = 64):

- pgvector's HNSW: its build time, its size, recall@10 and query latency (p50/p95) against the
  exact search, at its default ef_search (40);
- the raw SQL floor to the real RuVector: the conversion through text (it has no casts) and its
  HNSW build with the same options, by hand;
- the engine's InPlace migration, Atomic, on a fresh copy of the same data: its wall time against
  that floor, its timings and its own recall verdict;
- RuVector's HNSW, built by the engine with the carried options: its size, and recall@10 and
  latency on the same queries at its default ruvector.hnsw_ef_search (40).

The queries are stored rows' vectors (the first of every 1,000th row), the same for both indexes.
"""

from __future__ import annotations

import asyncio
import datetime
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from vector_migration.api import parse_manifest
from vector_migration.database.backup import LocalBackup
from vector_migration.database.sql import ConnectionParams, parse_database_url, quote_ident
from vector_migration.demo import clustered_embeddings_sql
from vector_migration.engine.context import Migration, RunInputs
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase

TEMPLATE = "bench_real_template"
HNSW = "WITH (m = 16, ef_construction = 64)"
CENTRES = 1000
QUERIES = 100
K = 10


def start_server(pg_config: Path, data: Path) -> Any:
    """The pgserver PostgreSQL 16 that `make ruvector` installed RuVector into, on a data directory of the bench's."""
    home = pg_config.parents[3]
    sys.path.insert(0, str(home))
    try:
        import pgserver  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(home))
    data.parent.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(data, cleanup_mode="stop")


async def _seed(uri: str, rows: int, dims: int) -> float:
    """The dataset with pgvector's HNSW, once, as a template: returns pgvector's build time."""
    admin = await asyncpg.connect(uri)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(_with_database(uri, TEMPLATE))
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute(
            f"CREATE TABLE items (id bigint PRIMARY KEY, category text NOT NULL, embedding vector({dims}))"
        )
        await conn.execute("SELECT setseed(0.42)")
        await conn.execute(clustered_embeddings_sql(dims, centres=CENTRES))
        await conn.execute(
            f"INSERT INTO items SELECT g, (ARRAY['a', 'b', 'c', 'd'])[1 + g % 4], pg_temp.embedding(g)::vector "
            f"FROM generate_series(1, {rows}) g"
        )
        await conn.execute("VACUUM ANALYZE items")
        started = time.perf_counter()
        await conn.execute(f"CREATE INDEX items_l2 ON items USING hnsw (embedding vector_l2_ops) {HNSW}")
        return time.perf_counter() - started
    finally:
        await conn.close()


def _with_database(uri: str, database: str) -> str:
    head, _, query = uri.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{database}?{query}"


async def _fresh_copy(uri: str, name: str) -> str:
    admin = await asyncpg.connect(uri)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    return _with_database(uri, name)


async def search_quality(conn: asyncpg.Connection, index: str) -> dict[str, Any]:
    """recall@10 and latency of ``index`` against the exact search, on the bench's fixed queries."""
    queries = [r[0] for r in await conn.fetch(f"SELECT embedding::text FROM items WHERE id % 1000 = 1 LIMIT {QUERIES}")]
    kind = await conn.fetchval("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                               "WHERE attrelid = 'items'::regclass AND attname = 'embedding'")  # fmt: skip
    search = f"SELECT id FROM items ORDER BY embedding <-> $1::text::{kind} LIMIT {K}"
    exact = []
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off")
        for query in queries:
            exact.append({r[0] for r in await conn.fetch(search, query)})
    found, latencies = 0, []
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {search}", queries[0]))
        assert index in plan, plan  # noqa: S101 - the bench measures the index or nothing
        statement = await conn.prepare(search)
        for query, truth in zip(queries, exact, strict=True):
            started = time.perf_counter()
            answered = await statement.fetch(query)
            latencies.append((time.perf_counter() - started) * 1000)
            found += len({r[0] for r in answered} & truth)
    ordered = sorted(latencies)
    return {
        "recall_at_10": found / (K * len(queries)),
        "latency_p50_ms": statistics.median(ordered),
        "latency_p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
        "queries": len(queries),
        "size_mb": await conn.fetchval("SELECT pg_relation_size($1::regclass)", index) / 2**20,
    }


async def _raw_floor(uri: str, dims: int) -> dict[str, float]:
    """The conversion through text and RuVector's HNSW build, by hand: the least any tool could do."""
    conn = await asyncpg.connect(await _fresh_copy(uri, "bench_real_floor"))
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute("DROP INDEX items_l2")
            await conn.execute("ALTER TABLE items ALTER COLUMN embedding TYPE text USING embedding::text")
            await conn.execute("DROP EXTENSION vector")
            await conn.execute("CREATE EXTENSION ruvector")
            await conn.execute(
                f"ALTER TABLE items ALTER COLUMN embedding TYPE ruvector({dims}) USING embedding::ruvector({dims})"
            )
        converted = time.perf_counter()
        await conn.execute(f"CREATE INDEX items_l2 ON items USING hnsw (embedding ruvector_l2_ops) {HNSW}")
        built = time.perf_counter()
    finally:
        await conn.close()
    return {"conversion_s": converted - started, "index_build_s": built - converted, "total_s": built - started}


async def _engine_run(uri: str, work: Path, pg_bin: Path) -> tuple[dict[str, Any], str]:
    """The engine's InPlace Atomic migration to the real RuVector on a fresh copy; the run and the copy's URI."""
    copy = await _fresh_copy(uri, "bench_real_atomic")
    resource = parse_manifest(
        {
            "apiVersion": "ruvector.dev/v1alpha1",
            "kind": "VectorMigration",
            "metadata": {"name": "bench-real-ruvector"},
            "spec": {
                "target": {"extension": "ruvector"},
                "reindex": {"mode": "Atomic"},
                "backup": {"enabled": False},
                "verify": {"sampleQueries": 100, "k": K},
            },
        }
    )
    params: ConnectionParams = parse_database_url(copy)
    migration = Migration(
        RunInputs(resource.metadata.name, resource.spec, params, backup=LocalBackup(work / "backups", (pg_bin,)))
    )
    started = time.perf_counter()
    status = await run(migration)
    wall = time.perf_counter() - started
    if status.phase is not Phase.SUCCEEDED:
        raise SystemExit(f"the migration to the real RuVector did not succeed: {status.message}")
    indexes = status.verification.indexes if status.verification else []
    return {
        "wall_s": wall,
        "timings": status.timings,
        "recall_before": min((i.recall_before for i in indexes if i.recall_before is not None), default=None),
        "recall_after": min((i.recall_after for i in indexes if i.recall_after is not None), default=None),
        "recall_verdicts": [i.recall_verdict for i in indexes],
    }, copy


async def measure(pg_config: Path, rows: int, dims: int, work: Path, repeats: int) -> dict[str, Any]:
    """Every real-RuVector row of the bench, each migration ``repeats`` times with the median run reported."""
    server = start_server(pg_config, work / "pgdata-real")
    try:
        uri = server.get_uri()
        print(f"real RuVector: seeding {rows:,} x {dims} on PostgreSQL 16 ...", flush=True)
        pgvector_build = await _seed(uri, rows, dims)
        conn = await asyncpg.connect(_with_database(uri, TEMPLATE))
        try:
            pgvector_quality = await search_quality(conn, "items_l2")
        finally:
            await conn.close()
        floors, runs = [], []
        ruvector_quality: dict[str, Any] = {}
        for attempt in range(1, repeats + 1):
            floors.append(await _raw_floor(uri, dims))
            engine, copy = await _engine_run(uri, work, pg_config.parent)
            runs.append(engine)
            conn = await asyncpg.connect(copy)
            try:
                ruvector_quality = await search_quality(conn, "items_l2")
            finally:
                await conn.close()
            last = floors[-1]
            print(f"  run {attempt}/{repeats}: floor {last['total_s']:.1f}s (index {last['index_build_s']:.1f}s), "
                  f"engine {engine['wall_s']:.1f}s", flush=True)  # fmt: skip
    finally:
        server.cleanup()
    floor = sorted(floors, key=lambda r: r["total_s"])[len(floors) // 2]
    engine = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "dims": dims,
        "repeats": repeats,
        "server": "PostgreSQL 16.2 (pgserver 0.1.4), pgvector 0.6.2, ruvector-postgres 2.0.6 (SQL 0.3.0)",
        "pgvector_hnsw": {"build_s": pgvector_build, **pgvector_quality},
        "floor": floor,
        "inplace_atomic": engine,
        "inplace_vs_floor": engine["wall_s"] / floor["total_s"],
        "ruvector_hnsw": {"build_s": floor["index_build_s"], **ruvector_quality},
    }


def report(result: dict[str, Any]) -> None:
    """The real rows, for a person."""
    pg, ru, floor = result["pgvector_hnsw"], result["ruvector_hnsw"], result["floor"]
    print(f"\nreal RuVector, {result['rows']:,} x {result['dims']} ({result['server']})")
    print(f"  raw floor: conversion through text {floor['conversion_s']:.1f}s + HNSW {floor['index_build_s']:.1f}s")
    engine = result["inplace_atomic"]
    timings = engine["timings"]
    print(f"  engine InPlace Atomic: {engine['wall_s']:.1f}s = {result['inplace_vs_floor']:.3f} x the floor "
          f"(swap {timings.get('swapSeconds', 0):.1f}, verify {timings.get('verifySeconds', 0):.1f})")  # fmt: skip
    for name, measured in (("pgvector", pg), ("RuVector", ru)):
        print(f"  {name} HNSW: build {measured['build_s']:.1f}s, {measured['size_mb']:.1f} MB, "
              f"recall@10 {measured['recall_at_10']:.3f}, p50 {measured['latency_p50_ms']:.2f} ms, "
              f"p95 {measured['latency_p95_ms']:.2f} ms")  # fmt: skip


if __name__ == "__main__":  # a quick look: python bench/real_ruvector.py <pg_config> [rows] [dims]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    dims = int(sys.argv[3]) if len(sys.argv) > 3 else 384
    report(asyncio.run(measure(Path(sys.argv[1]), rows, dims, Path(".bench"), 1)))
