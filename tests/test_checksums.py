"""Content checksums in every mode: equal for equal content, different for any lost, changed or moved value."""

from __future__ import annotations

import asyncpg
import pytest

from vector_migration.database.measure import (
    BINARY,
    NORMALIZED,
    TEXT,
    prints_identically,
    sends_identically,
    table_checksum,
)

MODES = [BINARY, TEXT, NORMALIZED]


@pytest.fixture
async def two_tables(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for name in ("a", "b"):
        await conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, tag text, v vector(3))")
        await conn.execute(
            f"INSERT INTO {name} VALUES (1, 'x', '[1,2,3]'), (2, 'y', '[0.1,0.2,0.3]'), (3, NULL, NULL),"
            " (4, 'z', '[4,5,6]')"
        )
    return conn


async def checksums(conn: asyncpg.Connection, mode: str) -> tuple[object, object]:
    return await table_checksum(conn, "public", "a", {"v"}, mode), await table_checksum(
        conn, "public", "b", {"v"}, mode
    )


@pytest.mark.parametrize("mode", MODES)
async def test_equal_content_checks_equal_whatever_the_row_order(two_tables: asyncpg.Connection, mode: str) -> None:
    await two_tables.execute("UPDATE b SET tag = tag")  # new row versions, another physical order
    a, b = await checksums(two_tables, mode)
    assert a == b and a.rows == 4


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "change",
    [
        "UPDATE b SET v = '[1,2,3.0001]' WHERE id = 1",  # a changed element
        "UPDATE b SET v = CASE id WHEN 1 THEN '[4,5,6]'::vector ELSE '[1,2,3]'::vector END WHERE id IN (1, 4)",  # moved
        "UPDATE b SET v = NULL WHERE id = 2",  # a value lost
        "UPDATE b SET v = '[0,0,0]' WHERE id = 3",  # NULL became a value
        "DELETE FROM b WHERE id = 4",  # a row lost
    ],
)
async def test_any_change_to_the_content_changes_the_checksum(
    two_tables: asyncpg.Connection, mode: str, change: str
) -> None:
    await two_tables.execute(change)
    a, b = await checksums(two_tables, mode)
    assert a != b


async def test_cheap_modes_are_chosen_only_when_the_samples_prove_them(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    samples = [("[0.1,0.2,0.3]", await conn.fetchval("SELECT vector_send('[0.1,0.2,0.3]')"))]
    # pgvector's own vector type sends and prints its values identically...
    assert await sends_identically(conn, samples, "public.vector")
    assert await prints_identically(conn, [text for text, _ in samples], "public.vector")
    # ...halfvec stores 16-bit floats: neither its binary nor its text form is the same
    assert not await sends_identically(conn, samples, "public.halfvec")
    assert not await prints_identically(conn, [text for text, _ in samples], "public.halfvec")
