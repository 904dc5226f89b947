"""The journal's typed records: what the engine wrote before records were typed is still read.

tests/fixtures/journal-v1.json holds journal rows exactly as the engine wrote them at commit
000417d (no schemaVersion), captured from real runs: an InPlace migration stopped after its swap,
and a Parallel one after its prepare and after its success.
"""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import condition, create_rich_database, manifest, migration, snapshot, step_until
from tests.servers import new_database
from vector_migration.database.journal import JournalEntry
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine import records
from vector_migration.engine.context import close_session
from vector_migration.engine.runner import run
from vector_migration.strategies.parallel import recorded as parallel_records
from vector_migration.strategies.parallel.plan import finalize_statements
from vector_migration.strategies.replicate import recorded as replicate_records
from vector_migration.vocabulary import ChecksumMode, Phase, Reason, StatementKind

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "journal-v1.json").read_text())
KINDS: dict[str, type[records.Record]] = {
    records.SWAPPED: records.SwapRecord,
    records.PREPARED: parallel_records.ShadowRecord,
    records.BACKFILL: parallel_records.BackfillRecord,
    records.FINALIZED: parallel_records.FinalizeRecord,
    records.VERIFIED: records.VerifiedRecord,
}
# The InPlace run the fixture's "inPlaceSwapped" rows came from.
IN_PLACE = {"reindex": {"mode": "Concurrent"}, "backup": {"enabled": False}}


def journal_of(rows: list[dict[str, object]]) -> records.Journal:
    entries = {
        str(row["event"]): JournalEntry(str(row["event"]), str(row["planHash"]), dict(row["detail"]))  # type: ignore[call-overload]
        for row in rows
    }
    return records.Journal(entries)


@pytest.mark.parametrize(("capture", "row"), [(c, n) for c, rows in FIXTURE.items() for n in range(len(rows))])
def test_every_record_written_before_versions_is_read(capture: str, row: int) -> None:
    written = FIXTURE[capture][row]
    assert "schemaVersion" not in written["detail"]

    record = journal_of([written]).get(written["event"], KINDS[written["event"]])

    assert record is not None and record.schema_version == 1


def test_a_version_1_shadow_record_keeps_its_own_names_for_the_finalize() -> None:
    prepared = parallel_records.shadows_recorded(journal_of(FIXTURE["parallelAfterPrepare"]))
    assert prepared is not None
    shadow = prepared.shadows[0]
    shadow.original_indexes = ["docs_pkey", "docs_title", "docs_l2", "docs_cosine"]  # read from the catalog then

    finalize = [s.sql for s in finalize_statements(shadow)]

    # The shadow's indexes were named by PostgreSQL (LIKE ... INCLUDING ALL) then; they still get the originals'.
    assert 'ALTER INDEX "public"."docs_vmig_shadow_pkey" RENAME TO "docs_pkey"' in finalize
    assert 'ALTER TABLE "public"."docs_vmig_shadow" RENAME TO "docs"' in finalize
    assert prepared.created_extension and prepared.checksum_mode in set(ChecksumMode)


async def test_a_swap_journaled_by_the_previous_version_is_continued_not_repeated(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    first = migration(database, manifest(**IN_PLACE), backup_dir)
    await step_until(first, Phase.REINDEX)
    await close_session(first)  # the swap committed; the process is replaced by the new version here
    (old,) = FIXTURE["inPlaceSwapped"]
    await conn.execute(
        "UPDATE vector_migration.journal SET detail = $1::jsonb, plan_hash = $2 WHERE event = 'swapped'",
        json.dumps(old["detail"]),
        old["planHash"],
    )

    status = await run(migration(database, manifest(**IN_PLACE), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert status.plan_hash == old["planHash"]
    assert condition(status, "ExtensionSwapped").reason == Reason.ALREADY_DONE
    recorded = {p["index"]: p["baseline"]["recall"] for p in old["detail"]["probes"] if p["baseline"]}
    assert {i.name: i.recall_before for i in status.verification.indexes if i.name in recorded} == recorded
    assert (await snapshot(conn)).rows == before.rows
    assert await conn.fetchval("SELECT count(*) FROM vector_migration.journal WHERE event = 'swapped'") == 1


async def test_a_record_from_a_newer_version_is_refused_not_guessed(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    first = migration(database, manifest(**IN_PLACE), backup_dir)
    await step_until(first, Phase.REINDEX)
    await close_session(first)
    await conn.execute(
        "UPDATE vector_migration.journal SET detail = detail || '{\"schemaVersion\": 99}'::jsonb"
        " WHERE event = 'swapped'"
    )
    indexes_before = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'")

    status = await run(migration(database, manifest(**IN_PLACE), backup_dir))

    assert status.phase is Phase.FAILED
    assert status.conditions and condition(status, "Ready").reason == Reason.JOURNAL_UNREADABLE
    assert "schemaVersion 99" in status.message and "nothing was changed" in status.message
    assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'") == indexes_before


async def test_records_written_now_carry_their_version(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)

    status = await run(migration(database, manifest(**IN_PLACE), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    versions = {
        r["event"]: r["version"]
        for r in await conn.fetch(
            "SELECT event, (detail->>'schemaVersion')::int AS version FROM vector_migration.journal"
        )
    }
    assert versions == {"swapped": records.SCHEMA_VERSION, "reindexed": records.SCHEMA_VERSION,
                        "verified": records.SCHEMA_VERSION}  # fmt: skip


# tests/fixtures/journal-v3.json: rows as the engine wrote them at commit 1bc8471 (schema version 3, lists by
# position), captured from real runs: a Parallel migration of the shop with views (one naming pgvector), a
# materialized view, a foreign key to it, its own triggers and a function taking vector, after its prepare and
# after its success; and a Replicate one with a carried expression index, after its prepare.
VERSION_3 = json.loads((Path(__file__).parent / "fixtures" / "journal-v3.json").read_text())
KINDS_3: dict[str, type[records.Record]] = {
    **KINDS,
    records.REPLICA_PREPARING: records.Record,
    records.REPLICA_PREPARED: replicate_records.ReplicaRecord,
}


@pytest.mark.parametrize(("capture", "row"), [(c, n) for c, rows in VERSION_3.items() for n in range(len(rows))])
def test_every_record_written_by_version_3_is_read(capture: str, row: int) -> None:
    written = VERSION_3[capture][row]
    assert written["detail"]["schemaVersion"] == 3

    record = journal_of([written]).get(written["event"], KINDS_3[written["event"]])

    assert record is not None and record.schema_version == 3


def test_version_3_lists_are_read_by_position_into_named_fields() -> None:
    prepared = parallel_records.shadows_recorded(journal_of(VERSION_3["parallelAfterPrepare"]))
    assert prepared is not None
    (docs,) = prepared.shadows
    assert [(k.column, k.type) for k in docs.key] == [("id", "bigint")]
    assert ("docs_l2_vmig", "docs_l2") in {(r.shadow, r.original) for r in docs.index_renames}
    assert [(s.column, s.sequence) for s in docs.sequences] == [("id", "public.docs_id_seq")]
    (key,) = docs.referencing_keys
    assert (key.table_schema, key.table, key.name) == ("public", "reviews", "reviews_doc_fkey")
    assert {(t.name, t.enabled) for t in docs.triggers} == {
        ("docs_audit", "O"),
        ("docs_paused", "D"),
        ("docs_touch", "O"),
    }
    assert prepared.functions[0].step is StatementKind.DROP_DEPENDENT
    assert prepared.functions[0].sql.startswith('DROP FUNCTION "public"."nearest_doc"')
    assert all(s.role is None for s in prepared.view_creates)
    assert prepared.materialized_moves and all(m.step in set(StatementKind) for m in prepared.materialized_moves)
    replica = replicate_records.replica_recorded(journal_of(VERSION_3["replicateAfterPrepare"]))
    assert replica is not None
    assert ("public", "docs") in {(t.table_schema, t.table) for t in replica.published}
    (build,) = replica.builds
    assert build.step is StatementKind.BUILD_INDEX and build.role is None and "docs_cast" in build.sql


def test_a_list_longer_than_its_record_is_refused_not_cut() -> None:
    with pytest.raises(ValueError, match="3 values for IndexRename's 2 fields"):
        parallel_records.IndexRename.model_validate(["a", "b", "c"])


async def test_a_parallel_migration_prepared_by_version_3_is_finished_by_this_one(
    logical_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    # The capture's database made again, its shadows made by this version, then its record replaced by the
    # one version 3 wrote (lists by position): the backfill, finalize and verify read it and finish.
    from tests.application import create_shop
    from tests.test_parallel import MATERIALIZED, NAMING_PGVECTOR, REFERENCING, TRIGGERS, VIEWS

    params, conn = await new_database(logical_server, "journal_v3_parallel")
    try:
        await create_shop(conn)
        for sql in (VIEWS, NAMING_PGVECTOR, MATERIALIZED, REFERENCING, TRIGGERS, CAPTURED_FUNCTION):
            await conn.execute(sql)
        spec = {"strategy": "Parallel", "backup": {"enabled": False}, "parallel": {"keepOldFor": "1h"}}
        first = migration(params, manifest(**spec), tmp_path / "b")
        await step_until(first, Phase.BACKFILL)
        await close_session(first)
        (old,) = VERSION_3["parallelAfterPrepare"]
        assert first.status.plan_hash == old["planHash"]  # the same schema gives the same plan
        await conn.execute(
            "UPDATE vector_migration.journal SET detail = $1::jsonb WHERE event = 'parallel_prepared'",
            json.dumps(old["detail"]),
        )

        status = await run(migration(params, manifest(**spec), tmp_path / "b", status=first.status))

        assert status.phase is Phase.SUCCEEDED, status.message
        catalog = status.verification.catalog if status.verification else None
        assert catalog is not None and not catalog.differences, catalog
        triggers = (
            "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal"
        )
        assert {tuple(r) for r in await conn.fetch(triggers) if r[0].startswith("docs_")} == {
            ("docs_audit", "O"), ("docs_paused", "D"), ("docs_touch", "O")
        }  # fmt: skip
        key = "SELECT confrelid::regclass::text FROM pg_constraint WHERE conname = 'reviews_doc_fkey'"
        assert await conn.fetchval(key) == "docs"
        assert await conn.fetchval("SELECT nearest_doc('[1,1,1,1,1,1,1,1]')") is not None
    finally:
        await conn.close()


CAPTURED_FUNCTION = (
    "CREATE FUNCTION nearest_doc(q vector) RETURNS bigint LANGUAGE sql AS "
    "$$ SELECT id FROM docs ORDER BY embedding <-> q LIMIT 1 $$;"
)
