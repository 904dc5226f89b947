"""Recall@k: exact search answered in one bounded scan equals exact search query by query.

The ground truth decides whether a migration is rolled back for lost recall, so the fast path is
checked against the slow one on indexes that miss neighbours, return fewer than k rows, see
ties, distances that are not numbers, and a partial index whose columns share names with the
search's own.
"""

from __future__ import annotations

import math

import asyncpg
import pytest

from vector_migration.database.measure import IndexTarget, measure_index

K = 10
DIMS = 16

# Columns named like the search's own (v, n, bound), a partial index on one of them, NULL
# vectors, eight copies of one vector (ties at any k), a zero vector (cosine distance NaN).
TABLE = f"""
CREATE EXTENSION IF NOT EXISTS vector;
SELECT setseed(0.5);
CREATE TABLE docs (id int PRIMARY KEY, n int, bound float8, v vector({DIMS}));
INSERT INTO docs SELECT i, i % 7, i / 10.0,
       CASE WHEN i % 31 = 0 THEN NULL
            WHEN i % 97 = 0 THEN array_fill(0.5::real, ARRAY[{DIMS}])::vector
            ELSE (SELECT array_agg(random()::real) FROM generate_series(1, {DIMS}) WHERE i > 0)::vector END
  FROM generate_series(1, 3000) i;
INSERT INTO docs VALUES (0, 1, 0, array_fill(0::real, ARRAY[{DIMS}])::vector);
-- Deliberately poor indexes: a sparse graph searched narrowly, and one list of fifty probed.
CREATE INDEX docs_l2 ON docs USING hnsw (v vector_l2_ops) WITH (m = 4, ef_construction = 8);
CREATE INDEX docs_cosine ON docs USING ivfflat (v vector_cosine_ops) WITH (lists = 50);
CREATE INDEX docs_ip_some ON docs USING hnsw (v vector_ip_ops) WITH (m = 4, ef_construction = 8) WHERE n > 4;
"""

INDEXES = {
    "docs_l2": ("<->", None),
    "docs_cosine": ("<=>", None),
    "docs_ip_some": ("<#>", "n > 4"),
}


async def query_vectors(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT v::text FROM docs WHERE v IS NOT NULL AND id % 50 = 3 ORDER BY id")
    ties = await conn.fetchval("SELECT v::text FROM docs WHERE id = 97")
    zero = await conn.fetchval("SELECT v::text FROM docs WHERE id = 0")
    return [r[0] for r in rows] + [ties, zero]


async def exact_by_hand(conn: asyncpg.Connection, operator: str, predicate: str | None, vector: str) -> list[float]:
    where = "v IS NOT NULL" + (f" AND {predicate}" if predicate else "")
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
        rows = await conn.fetch(
            f"/* test: by hand */ SELECT (v {operator} $1::vector)::float8 FROM docs WHERE {where} "
            f"ORDER BY v {operator} $1::vector LIMIT {K}",
            vector,
        )
    return [r[0] for r in rows]


def same_distance(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("index", list(INDEXES))
async def test_the_one_scan_ground_truth_is_exact_search_query_by_query(conn: asyncpg.Connection, index: str) -> None:
    await conn.execute(TABLE)
    await conn.execute("SET hnsw.ef_search = 10; SET ivfflat.probes = 1")
    operator, predicate = INDEXES[index]
    target = IndexTarget(index, "public", "docs", "v", "public", operator, f'"public"."vector"({DIMS})', predicate)
    queries = await query_vectors(conn)

    measured = await measure_index(conn, target, queries, K)

    by_hand = [await exact_by_hand(conn, operator, predicate, vector) for vector in queries]
    assert measured.truth is not None
    for vector, (count, farthest), expected in zip(queries, measured.truth, by_hand, strict=True):
        assert count == len(expected), vector
        assert same_distance(farthest, max(expected, default=0.0)), vector
    # poor indexes, so the ground truth is what tells the measured recall from a perfect one
    assert measured.recall is not None and measured.recall < 1.0


async def test_recall_is_one_when_the_index_answers_exactly(conn: asyncpg.Connection) -> None:
    await conn.execute(TABLE)
    await conn.execute("SET ivfflat.probes = 50")  # every list: the index's answer is exact search's
    target = IndexTarget("docs_cosine", "public", "docs", "v", "public", "<=>", f'"public"."vector"({DIMS})', None)
    queries = (await query_vectors(conn))[:-1]  # without the zero vector, whose distances are all NaN

    measured = await measure_index(conn, target, queries, K)

    assert measured.recall == 1.0 and measured.usable
