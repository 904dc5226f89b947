"""An InPlace migration on every RuVector surface: nothing lost, everything mapped, numbers recorded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import (
    JOURNAL_DDL,
    RECORDER,
    condition,
    create_rich_database,
    index_facts,
    manifest,
    migration,
    normalized,
    snapshot,
)
from vector_migration.database.sql import ConnectionParams
from vector_migration.database.surface import discover, is_the_planned_target
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

# extension -> (type, hnsw method, ivfflat method, opclass prefix)
SURFACES = {
    "ruvector_standin": ("ruvector", "ruhnsw", "ruivfflat", "ruvector_"),
    "ruvector_script_standin": ("ruvector", "hnsw", "ruivfflat", "ruvector_"),
    "ruvector_v2_standin": ("vector", "hnsw", "ivfflat", "vector_"),
}


@pytest.mark.parametrize("target", sorted(SURFACES))
async def test_every_surface_migrates_without_losing_a_row(
    target: str, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    status = await run(migration(database, manifest(target), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert condition(status, "Ready").status == "True"
    assert condition(status, "Stalled").status == "False"
    after = await snapshot(conn)
    # every row, every value: vectors compared as parsed floats, other columns as text
    assert after.rows == before.rows
    assert "vector" not in after.extensions and target in after.extensions
    type_name, hnsw, ivfflat, prefix = SURFACES[target]
    column_types = {
        (r["relname"], r["attname"]): r["typname"]
        for r in await conn.fetch(
            "SELECT c.relname, a.attname, t.typname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_type t ON t.oid = a.atttypid JOIN pg_depend d ON d.objid = t.oid AND d.deptype = 'e' "
            "JOIN pg_extension e ON e.oid = d.refobjid WHERE e.extname = $1 AND c.relkind = 'r'",
            target,
        )
    }
    assert column_types == {
        ("items", "embedding"): type_name,
        ('Mixed "Quoted" Table', "Embedding Vec"): type_name,
        ("empty_vectors", "embedding"): type_name,
    }
    # same names, same options, same predicate, on the target's access methods and operator classes
    assert await index_facts(conn) == {
        "items_l2": (hnsw, f"{prefix}l2_ops", ("ef_construction=40", "m=12"), None),
        "items_cosine_ivf": (ivfflat, f"{prefix}cosine_ops", ("lists=4",), None),
        "items_ip_partial": (hnsw, f"{prefix}ip_ops", (), "(category = 'a'::text)"),
        "L1 Index": (hnsw, f"{prefix}l1_ops", (), None),
        "empty_vectors_cosine": (hnsw, f"{prefix}cosine_ops", (), None),
    }
    invalid = await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
    assert invalid == 0
    # the dependent view came back with its grant
    assert set(after.views) == set(before.views)
    assert await conn.fetchval("SELECT has_table_privilege('vmig_test_reader', 'public.category_a', 'SELECT')")
    # the numbers a user reads in status
    verification = status.verification
    assert verification is not None and verification.passed
    assert {t.name: t.rows_after for t in verification.tables} == {
        'Odd Schema.Mixed "Quoted" Table': 300,
        "public.empty_vectors": 0,
        "public.items": 600,
    }
    assert all(t.checksum_before == t.checksum_after for t in verification.tables)
    # every stand-in runs pgvector's send function: the sampled values prove the cheapest checksum valid
    assert verification.checksum_mode == "binary"
    measured = {i.name: i for i in verification.indexes}
    assert measured["items_l2"].recall_before is not None and measured["items_l2"].recall_after is not None
    assert measured["items_l2"].recall_after >= measured["items_l2"].recall_before - 0.05
    assert measured["empty_vectors_cosine"].queries == 0
    assert status.backup is not None and Path(status.backup.location).stat().st_size == status.backup.size_bytes
    assert status.timings["writeBlockedSeconds"] > 0


async def test_stored_pgvector_settings_still_apply_after_the_swap(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)

    status = await run(migration(database, manifest("ruvector_standin"), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    settings = {s.name: s for s in status.inventory.settings}
    assert settings["hnsw.ef_search"].value == "80"
    # the stand-in runs pgvector's library, which reads hnsw.ef_search itself: kept, not renamed
    assert settings["hnsw.ef_search"].target_name == "hnsw.ef_search"
    fresh = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    try:
        await fresh.execute("SELECT '[1]'::text::public.ruvector")  # loads the library
        assert await fresh.fetchval("SHOW hnsw.ef_search") == "80"
    finally:
        await fresh.close()
    assert any("stand-in" in warning for warning in status.warnings)


async def test_concurrent_reindex_builds_indexes_after_the_commit(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    resource = manifest("ruvector_standin", reindex={"mode": "Concurrent"})

    status = await run(migration(database, resource, backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    after = await snapshot(conn)
    assert after.rows == before.rows
    assert set(after.indexes) == set(before.indexes)
    assert (await index_facts(conn))["items_l2"][:2] == ("ruhnsw", "ruvector_l2_ops")
    assert condition(status, "IndexesRebuilt").status == "True"
    assert condition(status, "IndexesRebuilt").message.startswith("5 index(es)")
    assert "(5 built after the swap)" in condition(status, "IndexesRebuilt").message


async def test_running_a_finished_migration_again_changes_nothing(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    first = await run(migration(database, manifest(), backup_dir))
    assert first.phase is Phase.SUCCEEDED, first.message
    journal_before = await conn.fetch("SELECT event, recorded_at FROM vector_migration.journal ORDER BY event")
    archives = sorted(backup_dir.iterdir())

    second = await run(migration(database, manifest(), backup_dir))

    assert second.phase is Phase.SUCCEEDED
    assert "nothing to do" in second.message
    assert second.plan_hash == first.plan_hash
    assert await conn.fetch("SELECT event, recorded_at FROM vector_migration.journal ORDER BY event") == journal_before
    assert sorted(backup_dir.iterdir()) == archives  # no second backup either


async def test_a_database_put_back_on_pgvector_is_not_reported_as_migrated(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await conn.execute(
        """
        CREATE EXTENSION vector;
        CREATE TABLE notes (id int PRIMARY KEY, embedding vector(3));
        INSERT INTO notes VALUES (1, '[1,2,3]'), (2, '[4,5,6]'), (3, NULL);
        """
    )
    resource = manifest(backup={"enabled": False})
    first = await run(migration(database, resource, backup_dir))
    assert first.phase is Phase.SUCCEEDED, first.message
    # Someone puts the database back on pgvector by hand, keeping the journal.
    await conn.execute(
        "CREATE EXTENSION vector;"
        " ALTER TABLE notes ALTER COLUMN embedding TYPE vector(3) USING embedding::text::vector(3)"
    )
    rows = await conn.fetch("SELECT id, embedding::text FROM notes ORDER BY id")

    again = await run(migration(database, resource, backup_dir))

    assert again.phase is Phase.FAILED
    assert condition(again, "Ready").reason == Reason.DRIFTED
    assert "column public.notes.embedding is public.vector(3) (vector) again" in again.message
    assert "extension vector is installed again" in again.message
    assert "apply a migration under a new name" in again.message
    assert await conn.fetch("SELECT id, embedding::text FROM notes ORDER BY id") == rows


async def test_post_migration_features_are_applied_when_the_target_has_them(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    # The target is installed beforehand, and offers RuVector's collection functions (recording
    # stand-ins here, made members of the extension so the engine finds them where RuVector has them).
    await conn.execute(
        """
        CREATE EXTENSION ruvector_standin;
        CREATE TABLE public.feature_calls (call text);
        CREATE FUNCTION public.ruvector_register_collection(text, text, text, text, int, text) RETURNS void
          LANGUAGE sql AS $$
            INSERT INTO public.feature_calls VALUES (concat_ws(' ', 'register', $1, $2, $3, $4, $5, $6)) $$;
        CREATE FUNCTION public.ruvector_set_tiers(text, int, int, int) RETURNS void
          LANGUAGE sql AS $$ INSERT INTO public.feature_calls VALUES (concat_ws(' ', 'tiers', $1, $2, $3, $4)) $$;
        ALTER EXTENSION ruvector_standin
          ADD FUNCTION public.ruvector_register_collection(text, text, text, text, int, text);
        ALTER EXTENSION ruvector_standin ADD FUNCTION public.ruvector_set_tiers(text, int, int, int);
        """
    )
    resource = manifest(postMigration={"registerCollections": True, "tiers": {"hotHours": 12}, "integrityPolicy": {}})

    status = await run(migration(database, resource, backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    calls = sorted(r[0] for r in await conn.fetch("SELECT call FROM public.feature_calls"))
    assert calls == [
        'register Mixed "Quoted" Table_Embedding Vec Odd Schema Mixed "Quoted" Table Embedding Vec 8 l1',
        "register empty_vectors_embedding public empty_vectors embedding 8 cosine",
        "register items_embedding public items embedding 8 l2",
        'tiers Mixed "Quoted" Table_Embedding Vec 12 168 720',
        "tiers empty_vectors_embedding 12 168 720",
        "tiers items_embedding 12 168 720",
    ]
    assert "postMigration: target ruvector_standin has no ruvector_integrity_policy_set(); skipped" in status.warnings


@pytest.mark.parametrize("mode", ["Atomic", "Concurrent"])
async def test_postgresql_runs_exactly_the_approved_ddl(
    mode: str, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    resource = manifest(approval="Manual", backup={"enabled": False}, reindex={"mode": mode})
    held = migration(database, resource, backup_dir)
    waiting = await run(held)
    assert waiting.phase is Phase.AWAITING_APPROVAL and held.facts.plan is not None, waiting.message
    document = held.facts.plan.as_document()
    await conn.execute(RECORDER)

    status = await run(migration(database, resource, backup_dir, approved_hash=waiting.plan_hash))

    assert status.phase is Phase.SUCCEEDED, status.message
    seen = [normalized(r["query"]) for r in await conn.fetch("SELECT query FROM public.ddl_seen ORDER BY seq")]
    planned = [normalized(s["sql"]) for stage in ("swapTransaction", "afterCommit") for s in document[stage]]
    assert [query for query in seen if query not in planned and not query.startswith(JOURNAL_DDL)] == []
    ddl = [query for query in planned if not query.startswith(("LOCK TABLE", "COPY "))]
    assert [query for query in ddl if query not in seen] == []


async def test_the_swap_knows_the_extension_it_created_by_its_catalog_without_measuring_under_the_lock(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE EXTENSION ruvector_standin")
    planned = await discover(conn, "ruvector_standin", None, collides=False)

    # measured in the probe; under the swap's lock only the catalog is read again
    assert await is_the_planned_target(conn, dataclasses.replace(planned, methods_failing=(("ruhnsw", "x"),)), None)
    assert not await is_the_planned_target(conn, dataclasses.replace(planned, version="9.9"), None)
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'vmig_index_check%'") == 0
