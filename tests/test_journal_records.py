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
from vector_migration.database.journal import JournalEntry
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine import records
from vector_migration.engine.context import close_session
from vector_migration.engine.runner import run
from vector_migration.strategies.parallel.plan import finalize_statements
from vector_migration.vocabulary import ChecksumMode, Phase, Reason

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "journal-v1.json").read_text())
KINDS: dict[str, type[records.Record]] = {
    records.SWAPPED: records.SwapRecord,
    records.PREPARED: records.ShadowRecord,
    records.BACKFILL: records.BackfillRecord,
    records.FINALIZED: records.FinalizeRecord,
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
    prepared = journal_of(FIXTURE["parallelAfterPrepare"]).prepared
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
