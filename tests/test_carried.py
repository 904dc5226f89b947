"""Indexes and constraints beyond a plain vector column: pgvector's README recipes, bit columns, CHECKs.

The indexes are pgvector's own documented ones (github.com/pgvector/pgvector, "Half-precision
indexing" and "Binary quantization"): expressions the target can take are rewritten through the
parser; the ones it cannot (RuVector has no ``binary_quantize`` and no 16-bit type) are refused by
name, or dropped when ``indexes.unmappable: Drop`` asks, listed with their definitions, and
created again by a rollback.
"""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import manifest, migration, snapshot
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

SURFACES = ["ruvector_standin", "ruvector_script_standin", "ruvector_v2_standin"]

ITEMS = """
CREATE EXTENSION vector;
CREATE TABLE items (id bigint PRIMARY KEY, category int NOT NULL, embedding vector(3));
INSERT INTO items SELECT i, i % 5, ARRAY[cos(i), sin(i), (i % 7) / 7.0]::real[]::vector FROM generate_series(1, 300) i;
"""

# pgvector README: "Half-precision indexing" and "Binary quantization"
HALF_PRECISION_INDEX = "CREATE INDEX items_half ON items USING hnsw ((embedding::halfvec(3)) halfvec_l2_ops)"
BINARY_QUANTIZE_INDEX = (
    "CREATE INDEX items_bq ON items USING hnsw ((binary_quantize(embedding)::bit(3)) bit_hamming_ops)"
)
# An expression every target can take: a cast to the column's own type, and a call of vector_dims()
EXPRESSION_INDEX = (
    "CREATE INDEX items_cast ON items USING hnsw ((embedding::text::vector(3)) vector_cosine_ops) "
    "WHERE vector_dims(embedding) = 3"
)
PARTIAL_INDEX = (
    "CREATE INDEX items_partial ON items USING hnsw (embedding vector_l2_ops) WHERE vector_dims(embedding) = 3"
)
MULTI_KEY_INDEX = "CREATE INDEX items_category_embedding ON items (category, id) WHERE vector_dims(embedding) = 3"
DIMENSIONS_CHECK = "ALTER TABLE items ADD CONSTRAINT three_dims CHECK (vector_dims(embedding) = 3)"


async def installed_extensions(conn: asyncpg.Connection) -> set[str]:
    return {row["extname"] for row in await conn.fetch("SELECT extname FROM pg_extension")}


async def index_definitions(conn: asyncpg.Connection, table: str = "items") -> dict[str, str]:
    """Each index of a table (or materialized view), its names qualified as the migration reads them."""
    async with conn.transaction():
        await conn.execute("SET LOCAL search_path = pg_catalog")
        rows = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY 1", table)
    return {row["indexname"]: row["indexdef"] for row in rows}


@pytest.mark.parametrize("target", SURFACES)
@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild"])
async def test_expressions_the_target_can_take_are_rewritten_and_keep_working(
    target: str, strategy: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(ITEMS + ";".join([EXPRESSION_INDEX, PARTIAL_INDEX, MULTI_KEY_INDEX, DIMENSIONS_CHECK]))
    before = await snapshot(conn)

    status = await run(migration(database, manifest(target, strategy=strategy), tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows
    definitions = await index_definitions(conn)
    assert "halfvec" not in str(definitions) and "vector_dims" not in str(definitions).replace("ruvector_dims", "")
    assert {"items_cast", "items_partial", "items_category_embedding"} <= set(definitions)
    valid = await conn.fetchval("SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'items'::regclass")
    assert valid is True
    # The constraint is there, for the target's function, and still refuses a wrong dimension count.
    check = await conn.fetchval("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'three_dims'")
    assert "ruvector_dims" in check
    with pytest.raises(asyncpg.PostgresError):
        await conn.execute("INSERT INTO items VALUES (1000, 1, '[1,2]')")
    handled = {i.name: i.handling for i in status.inventory.indexes if i.handling}
    assert handled == {"items_cast": "rewritten for the target", "items_category_embedding": "rewritten for the target"}


@pytest.mark.parametrize("target", SURFACES)
async def test_readme_recipes_the_target_cannot_take_are_refused_by_name_in_one_run(
    target: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(ITEMS + ";".join([HALF_PRECISION_INDEX, BINARY_QUANTIZE_INDEX]))
    before = await snapshot(conn)

    status = await run(migration(database, manifest(target, backup={"enabled": False}), tmp_path / "b"))

    assert status.phase is Phase.FAILED
    assert status.conditions[0].reason == Reason.UNMAPPED_INDEX
    assert "index public.items_half" in status.message and "halfvec_l2_ops has no counterpart" in status.message
    assert "index public.items_bq" in status.message
    assert "indexes.unmappable: Drop" in status.message
    assert await snapshot(conn) == before
    assert set(await index_definitions(conn)) == {"items_pkey", "items_half", "items_bq"}


async def test_unmappable_drop_drops_them_lists_them_and_a_rollback_creates_them_again(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(ITEMS + ";".join([HALF_PRECISION_INDEX, BINARY_QUANTIZE_INDEX]))
    original = await index_definitions(conn)
    resource = manifest(indexes={"unmappable": "Drop"})

    status = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert set(await index_definitions(conn)) == {"items_pkey"}
    dropped = {i.name: i.definition for i in status.inventory.indexes if i.handling and "dropped" in i.handling}
    assert dropped == {"items_half": original["items_half"], "items_bq": original["items_bq"]}
    assert any("items_bq" in warning and "is dropped" in warning for warning in status.warnings), status.warnings

    rolled_back = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s", rollback=True))

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    assert await index_definitions(conn) == original


@pytest.mark.parametrize("policy", ["Refuse", "Drop"])
async def test_a_bit_column_stays_bit_and_only_its_pgvector_index_follows_the_policy(
    policy: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(
        ITEMS
        + """
        CREATE TABLE fingerprints (id int PRIMARY KEY, code bit(8));
        INSERT INTO fingerprints SELECT i, (i % 256)::bit(8) FROM generate_series(1, 100) i;
        CREATE INDEX fingerprints_hamming ON fingerprints USING hnsw (code bit_hamming_ops);
        """
    )
    codes = await conn.fetch("SELECT id, code::text FROM fingerprints ORDER BY id")

    status = await run(migration(database, manifest(indexes={"unmappable": policy}), tmp_path / "b"))

    assert await conn.fetch("SELECT id, code::text FROM fingerprints ORDER BY id") == codes
    type_name = await conn.fetchval("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attname = 'code'")
    assert type_name == "bit(8)"
    if policy == "Refuse":
        assert status.phase is Phase.FAILED
        assert "index public.fingerprints_hamming" in status.message
        assert "bit_hamming_ops has no counterpart" in status.message
    else:
        assert status.phase is Phase.SUCCEEDED, status.message
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'fingerprints_hamming'") == 0


async def test_parallel_carries_expressions_checks_and_defaults_to_its_shadow_and_drops_on_request(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(ITEMS + ";".join([EXPRESSION_INDEX, PARTIAL_INDEX, MULTI_KEY_INDEX, DIMENSIONS_CHECK]))
    await conn.execute(
        "ALTER TABLE items ALTER COLUMN embedding SET DEFAULT '[0,0,1]'::vector(3);" + BINARY_QUANTIZE_INDEX
    )
    before = await snapshot(conn)
    resource = manifest(
        strategy="Parallel", backup={"enabled": False}, indexes={"unmappable": "Drop"}, parallel={"keepOldFor": "0s"}
    )

    status = await run(migration(database, resource, tmp_path / "b"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows
    definitions = await index_definitions(conn)
    assert set(definitions) == {"items_pkey", "items_cast", "items_partial", "items_category_embedding"}
    assert "ruvector_dims" in definitions["items_partial"] and "ruhnsw" in definitions["items_cast"]
    check = await conn.fetchval("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'three_dims'")
    assert "ruvector_dims" in check
    await conn.execute("INSERT INTO items (id, category) VALUES (1000, 1)")  # the default, for the target type
    assert await conn.fetchval("SELECT embedding::text FROM items WHERE id = 1000") == "[0,0,1]"
    with pytest.raises(asyncpg.PostgresError):
        await conn.execute("INSERT INTO items VALUES (1001, 1, '[1,2]')")
    assert "vector" not in await installed_extensions(conn)  # nothing on the new table needs pgvector


@pytest.mark.parametrize("target", SURFACES)
@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild", "Parallel"])
async def test_a_vector_array_column_is_converted_element_by_element(
    target: str, strategy: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    if strategy == "Parallel" and target != "ruvector_standin":
        pytest.skip("Parallel cannot run beside a target whose names collide with pgvector's")
    await conn.execute(
        ITEMS
        + """
        ALTER TABLE items ADD COLUMN history vector(3)[];
        UPDATE items SET history = ARRAY[embedding, embedding] WHERE id % 3 = 0;
        UPDATE items SET history = '{}' WHERE id % 3 = 1;
        """
    )
    arrays = await conn.fetch("SELECT id, history::text FROM items ORDER BY id")

    status = await run(migration(database, manifest(target, strategy=strategy), tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetch("SELECT id, history::text FROM items ORDER BY id") == arrays
    history_type = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass"
        " AND attname = 'history'"
    )
    assert history_type == ("vector(3)[]" if target == "ruvector_v2_standin" else "ruvector(3)[]")
    column = next(c for t in status.inventory.tables for c in t.columns if c.name == "history")
    assert column.array is True
    if strategy != "InPlace":
        return

    rolled_back = await run(
        migration(database, manifest(target, strategy=strategy), tmp_path / "b", scratch=tmp_path / "s", rollback=True)
    )

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    assert await conn.fetch("SELECT id, history::text FROM items ORDER BY id") == arrays
    assert (
        await conn.fetchval("SELECT 'history'::text FROM pg_attribute WHERE atttypid = 'vector[]'::regtype")
        == "history"
    )


async def test_parallel_names_a_pgvector_index_on_a_table_it_does_not_move(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(
        ITEMS
        + """
        CREATE TABLE fingerprints (id int PRIMARY KEY, code bit(8));
        CREATE INDEX fingerprints_hamming ON fingerprints USING hnsw (code bit_hamming_ops);
        """
    )
    before = await snapshot(conn)

    status = await run(migration(database, manifest(strategy="Parallel", backup={"enabled": False}), tmp_path / "b"))

    assert status.phase is Phase.FAILED
    assert "index public.fingerprints_hamming" in status.message
    assert await snapshot(conn) == before


MATERIALIZED = """
CREATE MATERIALIZED VIEW recent_items AS SELECT id, embedding FROM items WHERE id > 100;
CREATE UNIQUE INDEX recent_items_id ON recent_items (id);
CREATE INDEX recent_items_hnsw ON recent_items USING hnsw (embedding vector_cosine_ops);
"""


@pytest.mark.parametrize("target", SURFACES)
@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild"])
async def test_an_hnsw_index_on_a_materialized_view_is_rewritten_with_it_and_given_back_by_a_rollback(
    target: str, strategy: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(ITEMS + MATERIALIZED)
    rows = await conn.fetch("SELECT id, embedding::text FROM recent_items ORDER BY id")
    original = await index_definitions(conn, "recent_items")
    resource = manifest(target, strategy=strategy)

    status = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetch("SELECT id, embedding::text FROM recent_items ORDER BY id") == rows
    rewritten = await index_definitions(conn, "recent_items")
    assert set(rewritten) == set(original)
    assert rewritten["recent_items_hnsw"] != original["recent_items_hnsw"] or target == "ruvector_v2_standin"
    nearest = "SELECT id FROM recent_items ORDER BY embedding <=> '[1,0,0]' LIMIT 3"
    assert len(await conn.fetch(nearest)) == 3

    rolled_back = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s", rollback=True))

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    assert await index_definitions(conn, "recent_items") == original
    assert await conn.fetch("SELECT id, embedding::text FROM recent_items ORDER BY id") == rows


# What applications write into views: pgvector's functions and a vector literal, by name
NAMING_PGVECTOR = """
CREATE VIEW item_sizes AS
    SELECT id, vector_dims(embedding) AS dims, vector_norm(embedding) AS norm,
           embedding <-> '[1,0,0]'::vector AS distance FROM items;
CREATE MATERIALIZED VIEW item_norms AS SELECT id, vector_norm(embedding) AS norm FROM items;
"""
READ_VIEWS = """
    SELECT array_agg(ROW(s.id, s.dims, round(s.norm::numeric, 4), round(s.distance::numeric, 4),
                         round(n.norm::numeric, 4))::text ORDER BY s.id)
      FROM item_sizes s JOIN item_norms n USING (id)
"""


@pytest.mark.parametrize("target", SURFACES)
@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild"])
async def test_views_naming_pgvector_are_made_again_with_the_targets_names_and_given_back_by_a_rollback(
    target: str, strategy: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(ITEMS + NAMING_PGVECTOR)
    before = await conn.fetchval(READ_VIEWS)
    resource = manifest(target, strategy=strategy)

    status = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval(READ_VIEWS) == before
    named = await conn.fetchval("SELECT pg_get_viewdef('item_sizes') || pg_get_viewdef('item_norms')")
    assert "vector_dims(" not in named.replace("ruvector_dims(", "") or target == "ruvector_v2_standin"

    rolled_back = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s", rollback=True))

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    assert await conn.fetchval(READ_VIEWS) == before
    assert "ruvector" not in await conn.fetchval("SELECT pg_get_viewdef('item_sizes')")


@pytest.mark.parametrize("target", SURFACES)
async def test_in_concurrent_mode_carried_indexes_are_built_after_the_swap_commits(
    target: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, backup_dir: Path
) -> None:
    await conn.execute(ITEMS + ";".join([EXPRESSION_INDEX, MULTI_KEY_INDEX]) + ";" + MATERIALIZED)
    before = await snapshot(conn)
    resource = manifest(target, reindex={"mode": "Concurrent"})
    m = migration(database, resource, backup_dir, scratch=tmp_path / "s")

    status = await run(m)

    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows
    # The swap built none of them: writes did not wait for their builds
    plan = await conn.fetchval("SELECT detail FROM vector_migration.journal WHERE event = 'swapped'")
    built_after = {build["name"] for build in json.loads(plan)["rebuilds"] if build["concurrent"]}
    assert {"items_cast", "items_category_embedding", "recent_items_hnsw"} <= built_after
    invalid = await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
    assert invalid == 0
    definitions = {**await index_definitions(conn), **await index_definitions(conn, "recent_items")}
    assert "vector_dims" not in str(definitions).replace("ruvector_dims", "") or target == "ruvector_v2_standin"
