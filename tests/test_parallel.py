"""The Parallel strategy: the application writes through backfill, cutover and finalize, and loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.application import application_writing, create_shop, docs_before, final_equals_every_committed_change
from tests.scenarios import DIMS, condition, manifest, migration, step_until
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.context import Decisions
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason


async def installed_extensions(conn: asyncpg.Connection) -> set[str]:
    return {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}


async def docs_indexes(conn: asyncpg.Connection) -> dict[str, str]:
    return {
        r["indexname"]: r["indexdef"] for r in await conn.fetch("SELECT * FROM pg_indexes WHERE tablename = 'docs'")
    }


EMBEDDING_TYPE = """
    SELECT format_type(atttypid, atttypmod) FROM pg_attribute
     WHERE attrelid = 'docs'::regclass AND attname = 'embedding'
"""
PARALLEL = {
    "strategy": "Parallel",
    "backup": {"enabled": False},
    "parallel": {"batchSize": 250, "keepOldFor": "0s"},
}


async def test_the_application_writes_throughout_and_every_committed_change_is_there_once(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    before = await docs_before(conn)
    resource = manifest(
        **PARALLEL,
        cutover={"steps": [{"setWeight": 25}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]},
        # This test is about writes. The writer keeps replacing vectors while each analysis step
        # measures recall, so a true neighbour can come or go between the exact search and the
        # index's (0.93 against 1.00 seen once): the analysis gets room for that.
        verify={"sampleQueries": 20, "k": 5, "maxRecallDrop": 0.2},
    )
    m = migration(database, resource, backup_dir)

    async with application_writing(database) as committed:
        status = await run(m)
        during = committed[0]
        await asyncio.sleep(0.3)  # and on, against the new table

    assert status.phase is Phase.SUCCEEDED, status.message
    assert during > 50 and committed[0] > during
    await final_equals_every_committed_change(conn, before)
    assert status.parallel is not None and status.parallel.lock_window_seconds is not None
    assert status.parallel.lock_window_seconds < 1.0
    assert status.parallel.old_tables_dropped
    assert status.cutover is not None and status.cutover.weight == 100
    assert condition(status, "ShadowSynced").status == "True"
    assert condition(status, "Ready").status == "True"
    assert await conn.fetchval(EMBEDDING_TYPE) == "ruvector(8)"
    indexes = await docs_indexes(conn)
    assert set(indexes) == {"docs_pkey", "docs_title", "docs_l2", "docs_cosine"}
    assert "USING ruhnsw" in indexes["docs_l2"] and "m='12'" in indexes["docs_l2"].replace(" ", "")
    extensions = await installed_extensions(conn)
    assert "vector" not in extensions and "ruvector_standin" in extensions
    leftovers = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relname LIKE '%vmig_shadow%' OR relname LIKE '%pgvector_old%'"
    )
    assert leftovers == []
    assert await conn.fetchval("SELECT has_table_privilege('vmig_app', 'docs', 'INSERT')")
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'docs'::regclass AND contype = 'f' AND convalidated"
        )
        == 1
    )
    # The sequence moved with the table: a new row still gets the next id.
    assert await conn.fetchval("INSERT INTO docs (title) VALUES ('after') RETURNING id") > max(before)


@pytest.mark.parametrize("abort_at", [1, 2])
async def test_an_abort_at_a_cutover_step_drops_the_shadows_and_leaves_the_tables_untouched(
    abort_at: int, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    before = await docs_before(conn)
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    resource = manifest(**PARALLEL, cutover={"steps": steps})
    m = migration(database, resource, backup_dir)
    held = await run(m)
    assert held.phase is Phase.CUTOVER, held.message
    assert condition(held, "Reconciling").reason == Reason.AWAITING_PROMOTION
    assert (held.cutover.step, held.cutover.weight) == (1, 25)  # type: ignore[union-attr]
    if abort_at == 2:
        m.decisions = Decisions(promote=True)
        held = await run(m)
        assert (held.cutover.step, held.cutover.weight) == (3, 75)  # type: ignore[union-attr]
        assert m.facts.promotion_used  # one promotion released one pause: the next one held

    m.decisions = Decisions(rollback=True)
    done = await run(m)

    assert done.phase is Phase.ROLLED_BACK, done.message
    assert "never touched" in done.message
    assert condition(done, "Ready").reason == Reason.ROLLBACK_REQUESTED
    assert await docs_before(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE '%vmig%'") == 0
    assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == 0
    extensions = await installed_extensions(conn)
    assert "vector" in extensions and "ruvector_standin" not in extensions


async def test_a_rollback_after_the_finalize_swaps_back_with_the_writes_made_since(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    before = await docs_before(conn)
    resource = manifest(**{**PARALLEL, "parallel": {"keepOldFor": "1h"}})
    first = await run(migration(database, resource, backup_dir))
    assert first.phase is Phase.SUCCEEDED, first.message
    assert first.parallel is not None and not first.parallel.old_tables_dropped
    async with application_writing(database) as committed:  # on the new tables, mirrored to the old
        while committed[0] < 40:  # noqa: ASYNC110 - polling a plain counter the writer bumps
            await asyncio.sleep(0.05)

    m = migration(database, resource, backup_dir, rollback=True)
    m.status = first.model_copy(deep=True)
    done = await run(m)

    assert done.phase is Phase.ROLLED_BACK, done.message
    assert "no write lost" in done.message
    await final_equals_every_committed_change(conn, before)
    assert await conn.fetchval(EMBEDDING_TYPE) == "vector(8)"
    assert set(await docs_indexes(conn)) == {"docs_pkey", "docs_title", "docs_l2", "docs_cosine"}
    extensions = await installed_extensions(conn)
    assert "vector" in extensions and "ruvector_standin" not in extensions


async def test_a_target_whose_names_collide_cannot_run_beside_the_source(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    status = await run(migration(database, manifest("ruvector_v2_standin", **PARALLEL), backup_dir))
    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.UNSUPPORTED_STRATEGY
    assert "names collide" in status.message and "use InPlace" in status.message


VIEWS = """
CREATE VIEW recent_docs WITH (security_barrier = true) AS SELECT id, title, embedding FROM docs WHERE id > 100;
CREATE VIEW recent_titles AS SELECT id, title FROM recent_docs;
COMMENT ON VIEW recent_docs IS 'the newest documents';
GRANT SELECT ON recent_docs, recent_titles TO vmig_app;
"""
VIEW_READS = """
    SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                    WHERE r.ev_class = 'recent_docs'::regclass AND d.refobjid = $1::regclass)
"""
VIEW_TYPE = """
    SELECT format_type(atttypid, atttypmod) FROM pg_attribute
     WHERE attrelid = 'recent_docs'::regclass AND attname = 'embedding'
"""


async def test_views_over_a_moving_table_read_the_migrated_table_after_the_finalize_and_the_old_one_after_a_rollback(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    await conn.execute(VIEWS)
    resource = manifest(**{**PARALLEL, "parallel": {"keepOldFor": "1h"}})

    status = await run(migration(database, resource, backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval(VIEW_READS, "docs") is True  # not docs_pgvector_old
    new = await conn.fetchval("INSERT INTO docs (category, title, embedding) VALUES (2, 'fresh', $1) RETURNING id",
                              "[1,1,1,1,1,1,1,1]")  # fmt: skip
    assert await as_app(conn, f"SELECT title FROM recent_titles WHERE id = {new}") == "fresh"
    assert await conn.fetchval(VIEW_TYPE) == "ruvector(8)"
    assert await conn.fetchval("SELECT obj_description('recent_docs'::regclass, 'pg_class')") == "the newest documents"
    assert await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'recent_docs'") == [
        "security_barrier=true"
    ]

    m = migration(database, resource, backup_dir, rollback=True)
    m.status = status.model_copy(deep=True)
    rolled_back = await run(m)

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    assert await conn.fetchval(VIEW_TYPE) == "vector(8)"
    assert await conn.fetchval(VIEW_READS, "docs") is True  # the pgvector table, which has the name again
    assert await as_app(conn, f"SELECT title FROM recent_titles WHERE id = {new}") == "fresh"


MATERIALIZED = """
CREATE MATERIALIZED VIEW doc_vectors AS SELECT id, category, title, embedding FROM docs WHERE category IS NOT NULL;
CREATE UNIQUE INDEX doc_vectors_id ON doc_vectors (id);
CREATE INDEX doc_vectors_hnsw ON doc_vectors USING hnsw (embedding vector_l2_ops) WITH (m = 8);
COMMENT ON MATERIALIZED VIEW doc_vectors IS 'documents with a category, for search';
GRANT SELECT ON doc_vectors TO vmig_app;
"""
# The journal's verified status says when the old tables may go (what a re-run reads)
KEEP_OLD_FOR_PASSED = """
    UPDATE vector_migration.journal
       SET detail = jsonb_set(detail, '{status,parallel,dropOldAfter}', '"2000-01-01T00:00:00Z"')
     WHERE event = 'verified'
"""
MATERIALIZED_FACTS = """
    SELECT c.relispopulated, pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'),
           has_table_privilege('vmig_app', c.oid, 'SELECT'),
           (SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = c.oid AND attname = 'embedding'),
           (SELECT array_agg(indexdef ORDER BY indexname) FROM pg_indexes WHERE tablename = 'doc_vectors'),
           EXISTS (SELECT 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                    WHERE r.ev_class = c.oid AND d.refobjid = 'docs'::regclass)
      FROM pg_class c WHERE c.relname = 'doc_vectors'
"""


async def test_a_materialized_view_stays_with_the_old_table_until_it_goes_then_moves_with_its_indexes(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    await conn.execute(MATERIALIZED)
    rows = await conn.fetchval("SELECT count(*) FROM doc_vectors")
    resource = manifest(**{**PARALLEL, "parallel": {"keepOldFor": "1h"}})

    status = await run(migration(database, resource, backup_dir))

    # Finalized: the view still reads the old table, kept in sync, with pgvector's types and index
    assert status.phase is Phase.SUCCEEDED, status.message
    kept = await conn.fetchrow(MATERIALIZED_FACTS)
    assert kept[4] == "vector(8)" and kept[6] is False  # not docs (the migrated table) yet
    new = await conn.fetchval("INSERT INTO docs (category, title, embedding) VALUES (2, 'fresh', $1) RETURNING id",
                              "[1,1,1,1,1,1,1,1]")  # fmt: skip
    await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY doc_vectors")  # what the application does
    assert await as_app(conn, f"SELECT title FROM doc_vectors WHERE id = {new}") == "fresh"

    # keepOldFor has passed, and the migration is run again (the operator does it on its own): the old
    # tables go, and the view moves over the migrated table first
    await conn.execute(KEEP_OLD_FOR_PASSED)
    done = await run(migration(database, resource, backup_dir))

    assert done.phase is Phase.SUCCEEDED, done.message
    assert done.parallel is not None and done.parallel.old_tables_dropped
    populated, owner, comment, granted, embedding, indexes, reads_docs = await conn.fetchrow(MATERIALIZED_FACTS)
    assert (populated, owner, comment, granted) == (True, "postgres", "documents with a category, for search", True)
    assert embedding == "ruvector(8)" and reads_docs
    assert indexes == [
        "CREATE INDEX doc_vectors_hnsw ON public.doc_vectors USING ruhnsw (embedding) WITH (m='8')",  # the stand-in's
        "CREATE UNIQUE INDEX doc_vectors_id ON public.doc_vectors USING btree (id)",
    ]
    assert await conn.fetchval("SELECT count(*) FROM doc_vectors") == rows + 1
    assert await as_app(conn, f"SELECT title FROM doc_vectors WHERE id = {new}") == "fresh"
    assert "vector" not in await installed_extensions(conn)
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE '%vmig%'") == 0


async def test_views_parallel_cannot_move_are_refused_by_name_in_one_run(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    await conn.execute("CREATE MATERIALIZED VIEW doc_titles AS SELECT id, title FROM docs")
    await conn.execute("CREATE VIEW doc_title_lengths AS SELECT id, length(title) FROM doc_titles")
    await conn.execute("CREATE VIEW recent AS SELECT id, title FROM docs WHERE id > 10")
    await conn.execute("CREATE MATERIALIZED VIEW recent_titles AS SELECT id, title FROM recent")
    status = await run(migration(database, manifest(**PARALLEL), backup_dir))
    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.BLOCKING_DEPENDENT
    assert "view public.doc_title_lengths reads materialized view public.doc_titles" in status.message
    assert "materialized view public.recent_titles reads a view over a moving table" in status.message
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE '%vmig%'") == 0


# pgvector's function and type by name, as applications write them into views
NAMING_PGVECTOR = """
CREATE VIEW doc_sizes AS
    SELECT id, vector_dims(embedding) AS dims, embedding <-> '[1,1,1,1,1,1,1,1]'::vector AS distance FROM docs;
"""
READ_SIZES = "SELECT array_agg(ROW(id, dims, round(distance::numeric, 4))::text ORDER BY id) FROM doc_sizes"


async def test_a_view_naming_pgvector_is_made_again_with_the_targets_names_and_given_back_by_a_rollback(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    await conn.execute(NAMING_PGVECTOR)
    before = await conn.fetchval(READ_SIZES)
    resource = manifest(**{**PARALLEL, "parallel": {"keepOldFor": "1h"}})

    status = await run(migration(database, resource, backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    definition = await conn.fetchval("SELECT pg_get_viewdef('doc_sizes')")
    assert "ruvector_dims(embedding)" in definition and "::ruvector" in definition
    assert await conn.fetchval(READ_SIZES) == before

    m = migration(database, resource, backup_dir, rollback=True)
    m.status = status.model_copy(deep=True)
    rolled_back = await run(m)

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    definition = await conn.fetchval("SELECT pg_get_viewdef('doc_sizes')")
    assert "vector_dims(embedding)" in definition and "ruvector" not in definition
    assert await conn.fetchval(READ_SIZES) == before


async def test_quoted_mixed_case_names_move_through_a_shadow(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await conn.execute(
        f"""
        CREATE EXTENSION vector;
        CREATE SCHEMA "Odd Schema";
        CREATE TABLE "Odd Schema"."Mixed ""Quoted"" Table" (
            "Row Id" int, "select" text, "Embedding Vec" vector({DIMS}), PRIMARY KEY ("select", "Row Id"));
        INSERT INTO "Odd Schema"."Mixed ""Quoted"" Table"
        SELECT i, 'r' || (i % 3), (SELECT array_agg(random()::real) FROM generate_series(1, {DIMS}) WHERE i > 0)::vector
          FROM generate_series(1, 700) i;
        CREATE INDEX "L1 Index" ON "Odd Schema"."Mixed ""Quoted"" Table" USING hnsw ("Embedding Vec" vector_l1_ops);
        """
    )
    table = '"Odd Schema"."Mixed ""Quoted"" Table"'
    before = await conn.fetch(f'SELECT "Row Id", "select", "Embedding Vec"::text AS v FROM {table} ORDER BY 1')

    status = await run(migration(database, manifest(**{**PARALLEL, "parallel": {"batchSize": 100}}), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    after = await conn.fetch(f'SELECT "Row Id", "select", "Embedding Vec"::text AS v FROM {table} ORDER BY 1')
    assert after == before
    method = await conn.fetchval(
        """SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam WHERE c.relname = 'L1 Index'"""
    )
    assert method == "ruhnsw"


async def test_a_parallel_run_resumed_with_no_memory_compares_with_the_proven_checksums(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    from tests.reliability.harness import advance_to
    from vector_migration.engine.context import close_session

    await create_shop(conn)
    before = await docs_before(conn)
    resource = manifest(**PARALLEL)
    first = migration(database, resource, backup_dir)
    await advance_to(first, Phase.BACKFILL)
    await close_session(first)  # an operator restart: only the status and the journal remain

    status = await run(migration(database, resource, backup_dir, status=first.status.model_copy(deep=True)))

    assert status.phase is Phase.SUCCEEDED, status.message
    # the binary form the checklist's samples proved valid, read back from the journal (not the slow
    # parsed form a run without memory would otherwise fall back to)
    assert status.verification is not None and status.verification.checksum_mode == "binary"
    assert await docs_before(conn) == before


async def test_a_command_line_run_cut_off_after_the_finalize_continues_from_the_journal(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    before = await docs_before(conn)
    resource = manifest(**{**PARALLEL, "parallel": {"batchSize": 250, "keepOldFor": "1h"}})
    first = await run(migration(database, resource, backup_dir))
    assert first.phase is Phase.SUCCEEDED, first.message
    # The process died after the finalize committed and before the success was journaled.
    await conn.execute("DELETE FROM vector_migration.journal WHERE event = 'verified'")

    status = await run(migration(database, resource, backup_dir))  # run again with no status, as a command line is

    assert status.phase is Phase.SUCCEEDED, status.message
    assert "checking the migrated tables" in " ".join(c.message for c in status.conditions) or status.message
    assert await conn.fetchval(EMBEDDING_TYPE) == "ruvector(8)"
    assert await docs_before(conn) == before
    assert await conn.fetchval("SELECT to_regclass('public.docs_pgvector_old') IS NOT NULL")  # kept for keepOldFor
    assert await conn.fetchval("SELECT to_regclass('public.docs_vmig_shadow')") is None


@pytest.mark.parametrize("comment", ["the shop's documents", None])
async def test_the_tables_own_comment_survives_the_finalize(
    comment: str | None, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    if comment is not None:
        await conn.execute("COMMENT ON TABLE docs IS 'the shop''s documents'")

    status = await run(migration(database, manifest(**PARALLEL), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval(EMBEDDING_TYPE) == "ruvector(8)"
    assert await conn.fetchval("SELECT obj_description('public.docs'::regclass, 'pg_class')") == comment


@pytest.mark.parametrize(
    "cut_before", [Phase.BACKFILL, Phase.REINDEX, Phase.VERIFY, Phase.CUTOVER, Phase.FINALIZE, Phase.SUCCEEDED]
)
async def test_a_command_line_run_cut_off_before_any_phase_finishes_from_the_journal(
    cut_before: Phase, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    from tests.reliability.harness import advance_to
    from vector_migration.engine.context import close_session

    await create_shop(conn)
    before = await docs_before(conn)
    resource = manifest(**{**PARALLEL, "parallel": {"batchSize": 250, "keepOldFor": "1h"}})
    first = migration(database, resource, backup_dir)
    await advance_to(first, cut_before)
    await close_session(first)  # the process dies: a command line keeps no status

    status = await run(migration(database, resource, backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval(EMBEDDING_TYPE) == "ruvector(8)"
    assert await docs_before(conn) == before
    assert await conn.fetchval("SELECT to_regclass('public.docs_vmig_shadow')") is None


REFERENCING = """
CREATE TABLE reviews (id int PRIMARY KEY, doc bigint NOT NULL REFERENCES docs (id) ON DELETE CASCADE
                      DEFERRABLE INITIALLY DEFERRED);
INSERT INTO reviews SELECT i, i FROM generate_series(1, 50) i;
"""
KEY_TARGET = "SELECT confrelid::regclass::text FROM pg_constraint WHERE conname = 'reviews_doc_fkey'"


async def test_a_table_another_table_references_moves_and_the_key_follows_it_and_back(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    await conn.execute(REFERENCING)
    definition = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'reviews_doc_fkey'"
    )
    resource = manifest(**{**PARALLEL, "parallel": {"keepOldFor": "1h"}})

    first = await run(migration(database, resource, backup_dir))

    assert first.phase is Phase.SUCCEEDED, first.message
    key = await conn.fetchrow("SELECT confrelid::regclass::text AS target, convalidated, pg_get_constraintdef(oid) AS d"
                              " FROM pg_constraint WHERE conname = 'reviews_doc_fkey'")  # fmt: skip
    assert (key["target"], key["convalidated"], key["d"]) == ("docs", True, definition)
    assert await conn.fetchval(EMBEDDING_TYPE) == "ruvector(8)"  # the key references the migrated table
    async with conn.transaction():
        await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("INSERT INTO reviews VALUES (1000, 999999)")
    await conn.execute("DELETE FROM docs WHERE id = 1")  # the cascade acts on the table the application uses
    assert await conn.fetchval("SELECT count(*) FROM reviews WHERE doc = 1") == 0

    m = migration(database, resource, backup_dir, rollback=True)
    m.status = first.model_copy(deep=True)
    done = await run(m)

    assert done.phase is Phase.ROLLED_BACK, done.message
    assert await conn.fetchval(EMBEDDING_TYPE) == "vector(8)"
    assert await conn.fetchval(KEY_TARGET) == "docs"  # back on the pgvector table, which has the name again
    assert await conn.fetchval("SELECT count(*) FROM reviews") == 49


ROW_SECURITY = """
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY even_rows ON docs FOR SELECT TO vmig_app USING (id % 2 = 0);
CREATE POLICY anyone_adds ON docs AS PERMISSIVE FOR INSERT TO vmig_app WITH CHECK (category = 2);
GRANT USAGE ON SEQUENCE docs_id_seq TO vmig_app;
"""
AS_APP = "SET LOCAL ROLE vmig_app"


async def as_app(conn: asyncpg.Connection, sql: str) -> Any:
    async with conn.transaction():
        await conn.execute(AS_APP)
        return await conn.fetchval(sql)


async def test_a_table_with_row_level_security_moves_with_its_policies_and_the_application_keeps_writing(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    await conn.execute(ROW_SECURITY)
    visible = await as_app(conn, "SELECT count(*) FROM docs")
    resource = manifest(**{**PARALLEL, "parallel": {"keepOldFor": "1h"}})
    m = migration(database, resource, backup_dir)
    await step_until(m, Phase.FINALIZE)
    # Mid-migration: the application inserts (its policy allows inserting, not reading back); the
    # mirror into the shadow must not be refused by the same policies. And the shadow, which the
    # application may read (grants are copied), shows only what the policies let it see.
    await as_app(conn, "INSERT INTO docs (category, title, embedding) VALUES (2, 'during', '[1,1,1,1,1,1,1,1]')")
    shadow_visible = await as_app(conn, "SELECT count(*) FROM docs_vmig_shadow WHERE id % 2 = 1")
    assert shadow_visible == 0

    status = await run(m)

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval(EMBEDDING_TYPE) == "ruvector(8)"
    policies = await conn.fetch("SELECT policyname, cmd FROM pg_policies WHERE tablename = 'docs' ORDER BY 1")
    assert [(p["policyname"], p["cmd"]) for p in policies] == [("anyone_adds", "INSERT"), ("even_rows", "SELECT")]
    assert await conn.fetchval("SELECT relrowsecurity FROM pg_class WHERE relname = 'docs'") is True
    expected = visible + (1 if await conn.fetchval("SELECT max(id) % 2 = 0 FROM docs") else 0)
    assert await as_app(conn, "SELECT count(*) FROM docs") == expected
    # After the finalize the reverse mirror keeps the old table in step, under the same policies.
    await as_app(conn, "INSERT INTO docs (category, title, embedding) VALUES (2, 'after', '[2,2,2,2,2,2,2,2]')")
    assert await conn.fetchval("SELECT count(*) FROM docs_pgvector_old WHERE title IN ('during', 'after')") == 2
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_app(conn, "INSERT INTO docs (category, title) VALUES (3, 'refused by its policy')")


TRIGGERS = """
ALTER TABLE docs ADD COLUMN touched_at timestamptz;
CREATE TABLE audit (seq bigserial PRIMARY KEY, doc bigint, op text);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.touched_at := now(); RETURN NEW; END $$;
CREATE FUNCTION audited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (doc, op) VALUES (NEW.id, TG_OP); RETURN NULL; END $$;
CREATE TRIGGER docs_touch BEFORE UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER docs_audit AFTER INSERT ON docs FOR EACH ROW EXECUTE FUNCTION audited();
CREATE TRIGGER docs_paused AFTER DELETE ON docs FOR EACH ROW EXECUTE FUNCTION audited();
ALTER TABLE docs DISABLE TRIGGER docs_paused;
"""
TRIGGER_STATES = (
    "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname LIKE 'docs_%' ORDER BY 1"
)


async def test_the_tables_own_triggers_move_with_it_and_fire_once_and_a_rollback_gives_them_back(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    await conn.execute(TRIGGERS)
    states = [tuple(r) for r in await conn.fetch(TRIGGER_STATES, "docs")]
    resource = manifest(**{**PARALLEL, "parallel": {"keepOldFor": "1h"}})

    status = await run(migration(database, resource, backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert [tuple(r) for r in await conn.fetch(TRIGGER_STATES, "docs")] == states
    assert {r[1] for r in await conn.fetch(TRIGGER_STATES, "docs_pgvector_old")} == {"D"}
    new = await conn.fetchval("INSERT INTO docs (category, title, embedding) VALUES (2, 't', $1) RETURNING id",
                              "[1,1,1,1,1,1,1,1]")  # fmt: skip
    await conn.execute("UPDATE docs SET title = 'u' WHERE id = $1", new)
    assert await conn.fetchval("SELECT touched_at IS NOT NULL FROM docs WHERE id = $1", new)
    # once, although the reverse mirror wrote the row into the old table too
    assert await conn.fetch("SELECT op FROM audit WHERE doc = $1", new) == [("INSERT",)]
    assert await conn.fetchval("SELECT count(*) FROM docs_pgvector_old WHERE id = $1", new) == 1

    m = migration(database, resource, backup_dir, rollback=True)
    m.status = status.model_copy(deep=True)
    rolled_back = await run(m)

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    assert [tuple(r) for r in await conn.fetch(TRIGGER_STATES, "docs")] == states
    await conn.execute("INSERT INTO docs (category, title, embedding) VALUES (2, 'back', '[2,2,2,2,2,2,2,2]')")
    assert await conn.fetchval("SELECT count(*) FROM audit WHERE op = 'INSERT'") == 2
