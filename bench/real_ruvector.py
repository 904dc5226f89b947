"""`bench/run.py --only ruvector` (and a part of `make bench` when `make ruvector` has built it): the real RuVector.

On PostgreSQL 16 with pgvector 0.6.2 and ruvector-postgres 2.0.6 (`make ruvector`), on the same
clustered dataset as the rest of the bench (10,000 rows by default: RuVector's HNSW builds slowly,
about 6 minutes for 100,000 x 64 here):

- the raw SQL floor to the real RuVector: the conversion through text (it has no casts), by hand;
- the engine's InPlace migration, Atomic, on a fresh copy of the same data, against that floor.
  The table has no vector index: the engine refuses RuVector 2.0.6's HNSW, whose presence makes
  `SELECT count(*)` of the table answer 0 (docs/ruvector-findings.md);
- each HNSW index (m = 16, ef_construction = 64) built by hand on its own copy, pgvector's on the
  pgvector table and RuVector's on the converted one: build time, size, recall@10 against the
  exact search and query latency (p50/p95), at the default ef_search of each (40).

The queries are stored rows' vectors (100, evenly spread), the same for both indexes.
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
from vector_migration.demo.real import BUILT, RealRuvectorServer
from vector_migration.engine.context import Migration, RunInputs
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase

TEMPLATE = "bench_real_template"
HNSW = "WITH (m = 16, ef_construction = 64)"
CENTRES = 1000  # topics the dataset's vectors cluster around (100 rows each at 100,000)
QUERIES = 100
K = 10


async def fill_items(conn: asyncpg.Connection, rows: int, dims: int) -> None:
    """The bench's dataset in ``conn``'s database: ``items``, ``rows`` vectors clustered around topics."""
    await conn.execute("SET maintenance_work_mem = '1GB'")
    await conn.execute("CREATE EXTENSION vector")
    await conn.execute(f"CREATE TABLE items (id bigint PRIMARY KEY, category text NOT NULL, embedding vector({dims}))")
    await conn.execute("SELECT setseed(0.42)")
    await conn.execute(clustered_embeddings_sql(dims, centres=CENTRES))
    await conn.execute(
        f"INSERT INTO items SELECT g, (ARRAY['a', 'b', 'c', 'd'])[1 + g % 4], pg_temp.embedding(g)::vector "
        f"FROM generate_series(1, {rows}) g"
    )


async def _database(server: RealRuvectorServer, name: str, template: str | None = None) -> str:
    """A new database on the server (a file copy of ``template`` when given: every run starts from the same bytes)."""
    admin = await asyncpg.connect(server.uri())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        copied = f" TEMPLATE {quote_ident(template)}" if template else ""
        await admin.execute(f"CREATE DATABASE {quote_ident(name)}{copied}")
    finally:
        await admin.close()
    return server.uri(name)


async def _seed(server: RealRuvectorServer, rows: int, dims: int) -> None:
    """The dataset, once, as a template every measurement copies."""
    conn = await asyncpg.connect(await _database(server, TEMPLATE))
    try:
        await fill_items(conn, rows, dims)
        await conn.execute("VACUUM ANALYZE items")
    finally:
        await conn.close()


async def search_quality(conn: asyncpg.Connection, index: str) -> dict[str, Any]:
    """recall@10 and latency of ``index`` against the exact search, on the bench's fixed queries."""
    step = max(await conn.fetchval("SELECT count(id) FROM items") // QUERIES, 1)
    queries = [
        r[0] for r in await conn.fetch(f"SELECT embedding::text FROM items WHERE id % {step} = 0 LIMIT {QUERIES}")
    ]
    kind = await conn.fetchval("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                               "WHERE attrelid = 'items'::regclass AND attname = 'embedding'")  # fmt: skip
    search = f"SELECT id FROM items ORDER BY embedding <-> $1::text::{kind} LIMIT {K}"
    exact = []
    async with conn.transaction():  # the heap, whatever the index offers (RuVector's HNSW answers count(*) with 0)
        await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off;"
                           " SET LOCAL enable_indexonlyscan = off")  # fmt: skip
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


async def _hnsw(conn: asyncpg.Connection, opclass: str) -> dict[str, Any]:
    """An HNSW index built by hand with the bench's options: its build time, then its search quality."""
    await conn.execute("SET maintenance_work_mem = '1GB'")
    started = time.perf_counter()
    await conn.execute(f"CREATE INDEX items_l2 ON items USING hnsw (embedding {opclass}) {HNSW}")
    built = time.perf_counter() - started
    await conn.execute("ANALYZE items")
    return {"build_s": built, **await search_quality(conn, "items_l2")}


async def _raw_floor(server: RealRuvectorServer, dims: int) -> tuple[dict[str, float], str]:
    """The conversion through text, by hand: the least any tool could do (and the converted copy's URI)."""
    copy = await _database(server, "bench_real_floor", TEMPLATE)
    conn = await asyncpg.connect(copy)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute("ALTER TABLE items ALTER COLUMN embedding TYPE text USING embedding::text")
            await conn.execute("DROP EXTENSION vector")
            await conn.execute("CREATE EXTENSION ruvector")
            await conn.execute(
                f"ALTER TABLE items ALTER COLUMN embedding TYPE ruvector({dims}) USING embedding::ruvector({dims})"
            )
        converted = time.perf_counter()
    finally:
        await conn.close()
    return {"conversion_s": converted - started}, copy


async def _engine_run(server: RealRuvectorServer, work: Path, pg_bin: Path) -> tuple[dict[str, Any], str]:
    """The engine's InPlace Atomic migration to the real RuVector on a fresh copy; the run and the copy's URI."""
    copy = await _database(server, "bench_real_atomic", TEMPLATE)
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
    return {"wall_s": wall, "timings": status.timings, "message": status.message}, copy


async def measure(pg_config: Path, rows: int, dims: int, work: Path, repeats: int) -> dict[str, Any]:
    """Every real-RuVector row of the bench, each migration ``repeats`` times with the median run reported."""
    server = RealRuvectorServer(pg_config, work / "pgdata-real")
    try:
        print(f"real RuVector: seeding {rows:,} x {dims} on PostgreSQL 16 ...", flush=True)
        await _seed(server, rows, dims)
        floors, runs = [], []
        for attempt in range(1, repeats + 1):
            floors.append((await _raw_floor(server, dims))[0])
            runs.append((await _engine_run(server, work, pg_config.parent))[0])
            print(f"  run {attempt}/{repeats}: floor {floors[-1]['conversion_s']:.2f}s, "
                  f"engine {runs[-1]['wall_s']:.2f}s", flush=True)  # fmt: skip
        print("  pgvector's HNSW ...", flush=True)
        conn = await asyncpg.connect(await _database(server, "bench_real_pgvector", TEMPLATE))
        try:
            pgvector_hnsw = await _hnsw(conn, "vector_l2_ops")
        finally:
            await conn.close()
        print("  RuVector's HNSW ...", flush=True)
        conn = await asyncpg.connect((await _raw_floor(server, dims))[1])
        try:
            ruvector_hnsw = await _hnsw(conn, "ruvector_l2_ops")
            ruvector_hnsw["count_star_answers"] = await conn.fetchval("SELECT count(*) FROM items")
        finally:
            await conn.close()
    finally:
        server.stop()
    floor = sorted(floors, key=lambda r: r["conversion_s"])[len(floors) // 2]
    engine = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "dims": dims,
        "repeats": repeats,
        "server": BUILT,
        "floor": floor,
        "inplace_atomic": engine,
        "inplace_vs_floor": engine["wall_s"] / floor["conversion_s"],
        "pgvector_hnsw": pgvector_hnsw,
        "ruvector_hnsw": ruvector_hnsw,
    }


def report(result: dict[str, Any]) -> None:
    """The real rows, for a person."""
    pg, ru, floor = result["pgvector_hnsw"], result["ruvector_hnsw"], result["floor"]
    print(f"\nreal RuVector, {result['rows']:,} x {result['dims']} ({result['server']})")
    print(f"  raw floor: conversion through text {floor['conversion_s']:.2f}s (no vector index: see the findings)")
    engine = result["inplace_atomic"]
    timings = engine["timings"]
    print(f"  engine InPlace Atomic: {engine['wall_s']:.2f}s = {result['inplace_vs_floor']:.2f} x the floor "
          f"(checklist {timings.get('checklistSeconds', 0):.2f}, swap {timings.get('swapSeconds', 0):.2f}, "
          f"verify {timings.get('verifySeconds', 0):.2f})")  # fmt: skip
    for name, measured in (("pgvector", pg), ("RuVector", ru)):
        print(f"  {name} HNSW: build {measured['build_s']:.1f}s, {measured['size_mb']:.1f} MB, "
              f"recall@10 {measured['recall_at_10']:.3f}, p50 {measured['latency_p50_ms']:.2f} ms, "
              f"p95 {measured['latency_p95_ms']:.2f} ms")  # fmt: skip
    print(
        f"  with RuVector's HNSW on the table, SELECT count(*) answers {ru['count_star_answers']:,} "
        f"of {result['rows']:,} rows"
    )


if __name__ == "__main__":  # a quick look: python bench/real_ruvector.py <pg_config> [rows] [dims]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    dims = int(sys.argv[3]) if len(sys.argv) > 3 else 384
    report(asyncio.run(measure(Path(sys.argv[1]), rows, dims, Path(".bench"), 1)))
