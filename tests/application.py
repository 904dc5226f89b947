"""The application of the load tests: a shop whose writer logs every change it committed.

The writer names its table, never its type, and sends vectors as untyped text, so the same
statements work before and after the column changes type. Replaying its log over the table as
it was must give the table as it is: that is "every committed write present exactly once".
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from tests.scenarios import DIMS, parse_vector
from vector_migration.database.sql import ConnectionParams

SHOP = f"""
CREATE EXTENSION vector;
CREATE TABLE categories (id int PRIMARY KEY, name text);
INSERT INTO categories SELECT i, 'c' || i FROM generate_series(1, 5) i;
CREATE TABLE docs (
    id bigserial PRIMARY KEY,
    category int REFERENCES categories (id),
    title text NOT NULL,
    embedding vector({DIMS})
);
SELECT setseed(0.3);
INSERT INTO docs (category, title, embedding)
SELECT 1 + i % 5, 'doc ' || i, (SELECT array_agg(random()::real) FROM generate_series(1, {DIMS}) WHERE i > 0)::vector
  FROM generate_series(1, 3000) i;
CREATE INDEX docs_title ON docs (title);
CREATE INDEX docs_l2 ON docs USING hnsw (embedding vector_l2_ops) WITH (m = 12, ef_construction = 40);
CREATE INDEX docs_cosine ON docs USING ivfflat (embedding vector_cosine_ops) WITH (lists = 8);
CREATE ROLE vmig_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO vmig_app;
-- The application's own record of every change it committed, written in the same transaction.
CREATE TABLE changes (seq bigserial PRIMARY KEY, op text, doc_id bigint, embedding text);
"""


async def create_shop(conn: asyncpg.Connection) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'vmig_app'")
    await conn.execute(SHOP.replace("CREATE ROLE vmig_app;", "") if exists else SHOP)
    # Recall compares two builds of an index, and IVFFlat's lists differ between builds: over these
    # rows 10 queries measured 0.94-1.00 probing 4 of the 8 lists (a shadow build failed CI's
    # 0.05 tolerance once). Probing every list makes the index's answer exact, so a recall drop can
    # only come from the migration (a wrong operator class, lost rows), which is what tests measure.
    # (Clustered rows steady IVFFlat but unsettle HNSW: 0.80-1.00 on 10 queries over 25 builds.)
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'ALTER DATABASE "{database}" SET ivfflat.probes = 8')


def a_vector(rng: random.Random) -> str:
    return "[" + ",".join(f"{rng.random():.4f}" for _ in range(DIMS)) + "]"


@contextlib.asynccontextmanager
async def application_writing(
    database: ConnectionParams, *, reconnect: bool = False, where: Callable[[], ConnectionParams] | None = None
) -> AsyncIterator[list[int]]:
    """Inserts, updates and deletes, one transaction each, logged in `changes`, until the block ends.

    The application names its table, never its type, and sends vectors as untyped text: the same
    statements work before and after the column becomes ruvector (no prepared-statement cache).
    With ``reconnect``, a session ended under it (a switchover ends them all) is opened again, as
    a connection pool would: a transaction cut off either committed with its log row or not at all.
    ``where`` says where the database is when the application connects (a moved endpoint).
    """

    async def connect() -> asyncpg.Connection:
        at = where() if where is not None else database
        return await asyncpg.connect(
            host=at.host, port=at.port, user=at.user, database=at.dbname, statement_cache_size=0
        )

    writer = await connect()
    rng = random.Random(7)
    committed = [0, 0]  # transactions committed, sessions opened again
    stop = asyncio.Event()

    async def write() -> None:
        nonlocal writer
        while not stop.is_set():
            op = rng.choice(["insert", "insert", "update", "delete"])
            vector = a_vector(rng)
            try:
                async with writer.transaction():
                    if op == "insert":
                        doc = await writer.fetchval(
                            "INSERT INTO docs (category, title, embedding) VALUES (2, 'new', $1) RETURNING id", vector
                        )
                    else:
                        doc = await writer.fetchval("SELECT id FROM docs ORDER BY random() LIMIT 1")
                        if op == "update":
                            await writer.execute("UPDATE docs SET embedding = $2 WHERE id = $1", doc, vector)
                        else:
                            await writer.execute("DELETE FROM docs WHERE id = $1", doc)
                    await writer.execute(
                        "INSERT INTO changes (op, doc_id, embedding) VALUES ($1, $2, $3)",
                        op, doc, None if op == "delete" else vector,
                    )  # fmt: skip
                committed[0] += 1
            except asyncpg.LockNotAvailableError:
                pass  # never raised: the application sets no lock_timeout; kept to show the intent
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError):
                if not reconnect:
                    raise
                writer = await reconnected()
                committed[1] += 1
            await asyncio.sleep(0.002)

    async def reconnected() -> asyncpg.Connection:
        while True:
            try:
                return await connect()
            except (asyncpg.PostgresError, OSError):  # the database closed for the switchover, for a moment
                await asyncio.sleep(0.02)

    task = asyncio.create_task(write())
    try:
        yield committed
    finally:
        stop.set()
        await task
        await writer.close()


async def final_equals_every_committed_change(conn: asyncpg.Connection, before: dict[int, str | None]) -> None:
    """Replay the application's log over the table as it was: the result must be the table now."""
    expected = {doc: parse_vector(text) for doc, text in before.items()}
    for change in await conn.fetch("SELECT op, doc_id, embedding FROM changes ORDER BY seq"):
        if change["op"] == "delete":
            expected.pop(change["doc_id"], None)
        else:
            expected[change["doc_id"]] = parse_vector(change["embedding"])
    rows = await conn.fetch("SELECT id, embedding::text AS embedding FROM docs")
    actual = {row["id"]: parse_vector(row["embedding"]) for row in rows}
    assert len(rows) == len(actual)  # every row once
    assert actual.keys() == expected.keys()
    for doc, vector in expected.items():
        assert vector is not None and actual[doc] == pytest.approx(vector, abs=1e-6), doc


async def docs_before(conn: asyncpg.Connection) -> dict[int, str | None]:
    return {r["id"]: r["embedding"] for r in await conn.fetch("SELECT id, embedding::text AS embedding FROM docs")}
