"""Objects built on vector columns travel with them: views, view chains, materialized views."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import create_rich_database, manifest, migration, snapshot
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason


@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild"])
async def test_views_over_views_and_materialized_views_come_back_whole(
    strategy: str, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path, tmp_path: Path
) -> None:
    # Rebuild empties and refills the tables in its transaction: a materialized view made again
    # before the rows are back would be empty (it once was: 100 rows before, 0 after, "Succeeded").
    await create_rich_database(conn)
    await conn.execute(
        """
        CREATE VIEW category_a_labels AS SELECT id, label FROM category_a WHERE id > 10;
        CREATE VIEW category_a_ranked WITH (security_barrier = true) AS
          SELECT l.id, l.label, a.embedding FROM category_a_labels l JOIN category_a a USING (id);
        COMMENT ON VIEW category_a_ranked IS 'ranked by the app';
        CREATE MATERIALIZED VIEW item_snapshot AS SELECT id, embedding FROM items WHERE id <= 100;
        CREATE UNIQUE INDEX item_snapshot_id ON item_snapshot (id);
        CREATE MATERIALIZED VIEW item_snapshot_empty AS SELECT id, embedding FROM items WITH NO DATA;
        """
    )
    before = await snapshot(conn)
    snapshot_rows = await conn.fetch("SELECT id, embedding::text FROM item_snapshot ORDER BY id")

    status = await run(
        migration(database, manifest("ruvector_standin", strategy=strategy), backup_dir, scratch=tmp_path / "s")
    )

    assert status.phase is Phase.SUCCEEDED, status.message
    after = await snapshot(conn)
    assert after.rows == before.rows
    assert set(after.views) == set(before.views)
    assert await conn.fetch("SELECT id, embedding::text FROM item_snapshot ORDER BY id") == snapshot_rows
    assert await conn.fetchval("SELECT relispopulated FROM pg_class WHERE relname = 'item_snapshot_empty'") is False
    assert await conn.fetchval("SELECT to_regclass('public.item_snapshot_id')") is not None
    assert await conn.fetchval("SELECT obj_description('public.category_a_ranked'::regclass)") == "ranked by the app"
    assert await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'category_a_ranked'") == [
        "security_barrier=true"
    ]
    assert (
        await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'public.category_a_ranked'::regclass AND attname = 'embedding'"
        )
        == "ruvector(8)"
    )
    handled = {d.name: d.handling for d in status.inventory.dependents}
    assert set(handled) == {
        "public.category_a",
        "public.category_a_labels",
        "public.category_a_ranked",
        "public.item_snapshot",
        "public.item_snapshot_empty",
    }


async def test_a_generated_column_using_the_type_is_named_before_anything_changes(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    await conn.execute("ALTER TABLE items ADD COLUMN dims int GENERATED ALWAYS AS (vector_dims(embedding)) STORED")
    before = await snapshot(conn)

    status = await run(migration(database, manifest(), backup_dir))

    assert status.phase is Phase.FAILED
    assert status.conditions[0].reason == Reason.BLOCKING_DEPENDENT
    assert "(generated column) uses the source extension" in status.message
    assert "items" in status.message
    assert await snapshot(conn) == before
