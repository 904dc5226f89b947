"""Parallel's approved plan is the SQL that runs.

A person approving a Parallel migration approves its plan's hash; the plan must therefore hold the
statements Parallel really runs (shadow DDL, sync triggers, backfill, builds, finalize, cleanup)
and none it does not (InPlace's ALTER COLUMN under an ACCESS EXCLUSIVE lock). The witness is
PostgreSQL itself: an event trigger records every DDL command the migration's sessions run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from tests.application import create_shop
from tests.scenarios import JOURNAL_DDL, RECORDER, manifest, migration, normalized, step_until
from vector_migration.cli import EXIT_OK, main
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.runner import run, step
from vector_migration.vocabulary import Phase

PARALLEL = {"strategy": "Parallel", "backup": {"enabled": False}, "parallel": {"batchSize": 500, "keepOldFor": "0s"}}


def statements(document: dict[str, object], *stages: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for stage in stages:
        found += document[stage]  # type: ignore[arg-type]
    return found


async def plan_of(database: ConnectionParams, backup_dir: Path, **spec: object) -> tuple[dict[str, object], str]:
    held = migration(database, manifest(**{**PARALLEL, "approval": "Manual", **spec}), backup_dir)
    status = await run(held)
    assert status.phase is not Phase.FAILED, status.message
    assert held.facts.plan is not None
    return held.facts.plan.as_document(), status.plan_hash or ""


async def test_the_published_plan_is_parallels_own(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)

    document, plan_hash = await plan_of(database, backup_dir)

    assert document["strategy"] == "Parallel" and document["planHash"] == plan_hash
    prepare = [s["sql"] for s in statements(document, "prepareTransaction")]
    assert prepare[0] == 'LOCK TABLE "public"."docs" IN SHARE ROW EXCLUSIVE MODE'
    assert any(s.startswith('CREATE TABLE "public"."docs_vmig_shadow" (LIKE "public"."docs"') for s in prepare)
    assert any("CREATE TRIGGER" in s and 'ON "public"."docs"' in s for s in prepare)
    assert any("CREATE OR REPLACE FUNCTION" in s and "ON CONFLICT" in s for s in prepare)  # the trigger's body
    every = [s["sql"] for s in statements(document, "prepareTransaction", "afterBackfill", "finalizeTransaction")]
    # Nothing of InPlace's: the application's table is never converted in place, nor locked
    # exclusively before the finalize.
    assert not any('ALTER TABLE "public"."docs" ALTER COLUMN' in s for s in every)
    assert not any("ACCESS EXCLUSIVE" in s for s in prepare)
    assert not any("DROP EXTENSION" in s for s in every)
    assert "FOR SHARE" in statements(document, "backfill")[0]["sql"]
    finalize = [s["sql"] for s in statements(document, "finalizeTransaction")]
    assert finalize[0].endswith("IN ACCESS EXCLUSIVE MODE")
    assert 'ALTER TABLE "public"."docs_vmig_shadow" RENAME TO "docs"' in finalize
    assert 'DROP EXTENSION "vector" RESTRICT' in [s["sql"] for s in statements(document, "afterKeepOldFor")]


async def test_the_hash_does_not_move_with_a_setting_parallel_does_not_use(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)

    _, atomic = await plan_of(database, backup_dir, reindex={"mode": "Atomic"})
    _, concurrent = await plan_of(database, backup_dir, reindex={"mode": "Concurrent"})
    _, bigger_batches = await plan_of(database, backup_dir, reindex={"mode": "Concurrent"},
                                      parallel={"batchSize": 2000, "keepOldFor": "0s"})  # fmt: skip

    assert atomic == concurrent == bigger_batches


async def test_postgresql_runs_exactly_the_approved_ddl(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    document, plan_hash = await plan_of(database, backup_dir)
    await conn.execute(RECORDER)

    status = await run(migration(database, manifest(**{**PARALLEL, "approval": "Manual"}), backup_dir,
                                 approved_hash=plan_hash))  # fmt: skip

    assert status.phase is Phase.SUCCEEDED, status.message
    seen = [normalized(r["query"]) for r in await conn.fetch("SELECT query FROM public.ddl_seen ORDER BY seq")]
    planned = [
        normalized(s["sql"])
        for s in statements(document, "prepareTransaction", "afterBackfill", "finalizeTransaction", "afterKeepOldFor")
    ]
    unplanned = [query for query in seen if query not in planned and not query.startswith(JOURNAL_DDL)]
    assert unplanned == []
    ddl = [query for query in planned if not query.startswith(("LOCK TABLE", "SELECT "))]
    assert [query for query in ddl if query not in seen] == []


async def test_a_change_to_the_table_after_the_approval_stops_the_prepare(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    _, plan_hash = await plan_of(database, backup_dir)
    m = migration(database, manifest(**{**PARALLEL, "approval": "Manual"}), backup_dir, approved_hash=plan_hash)
    await step_until(m, Phase.SWAP)
    await conn.execute("CREATE INDEX docs_category ON docs (category)")  # after the approval: the shadow would lack it

    outcome = await step(m)

    assert m.status.phase is Phase.CHECKLIST, outcome
    assert "the database changed since the checklist" in m.status.message
    assert await conn.fetchval("SELECT to_regclass('public.docs_vmig_shadow')") is None
    status = await run(m)
    assert status.phase is Phase.AWAITING_APPROVAL and status.plan_hash != plan_hash
    assert "is stale" in status.message


async def test_plan_as_json_from_the_command_line_is_the_parallel_document(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_shop(conn)
    path = tmp_path / "vm.yaml"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "ruvector.dev/v1alpha1",
                "kind": "VectorMigration",
                "metadata": {"name": "shop"},
                "spec": {"target": {"extension": "ruvector_standin"}, "strategy": "Parallel"},
            }
        )
    )
    url = f"postgresql://{database.user}@/{database.dbname}?host={database.host}"

    code = await asyncio.to_thread(main, ["plan", "-f", str(path), "--database-url", url, "-o", "json"])

    assert code == EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert document["strategy"] == "Parallel"
    assert {"prepareTransaction", "backfill", "afterBackfill", "finalizeTransaction", "afterKeepOldFor"} <= set(
        document
    )
    assert "swapTransaction" not in document
