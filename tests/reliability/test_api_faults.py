"""The Kubernetes API misbehaving under a running operator: conflicts, server errors, dropped watches,
a backup Job past its deadline, the resource deleted mid-flight. kopf runs against kmock's emulator,
which injects each fault; the database is a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import kmock

from tests.chart import assert_allowed_by_the_chart
from tests.cluster import condition, phase, running_cluster, running_operator
from tests.reliability.report import observe, rows_lost, scenario
from tests.scenarios import create_rich_database, snapshot
from tests.test_operator import migration, secret_for
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres

VMIGS = kmock.resource("ruvector.dev", "v1alpha1", "vectormigrations")
JOBS = kmock.resource("batch", "v1", "jobs")
CLAIMS = kmock.resource("", "v1", "persistentvolumeclaims")


@scenario(
    "api-errors-on-status-writes",
    "the API server answers the operator's first status writes with 409 Conflict, then 503, then 500",
    "each write is retried shortly (kopf TemporaryError), the phases go on from the engine's memory; Succeeded",
)
async def test_status_writes_answered_with_errors(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        statuses = cluster.emulator["patch", VMIGS, kmock.subresource("status")]
        # slices count the requests the view has seen: these answer the first five
        refusals = [statuses[0:2] << 409, statuses[2:4] << 503, statuses[4:5] << 500]
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration())
        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"), timeout=120)
        refused = [len(list(reaction)) for reaction in refusals]
        assert_allowed_by_the_chart(cluster.operator_requests())

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert phase(done) == "Succeeded", done["status"]["message"]
    assert refused == [2, 2, 1]  # every injected fault was met
    assert lost == 0
    observe("api-errors-on-status-writes", f"5 status writes refused, then {phase(done)}", lost)


@scenario(
    "api-errors-creating-the-backup-job",
    "the API server answers the creation of the backup claim and Job with 503 (having stored them: a lost answer)",
    "the backup phase waits and looks again (BackupPending), finds the Job and goes on; it does not fail; Succeeded",
)
async def test_job_creation_answered_with_errors(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        refusal = cluster.emulator["post", JOBS][0:1] << 503
        # and the backup claim's creation the same way: the operator reads back the claim it finds
        claim_refusal = cluster.emulator["post", CLAIMS][0:1] << 503
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration())
        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"), timeout=120)
        refused_creations = len(list(refusal)) + len(list(claim_refusal))
        assert_allowed_by_the_chart(cluster.operator_requests())

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert phase(done) == "Succeeded", done["status"]["message"]
    assert refused_creations == 2
    assert lost == 0
    observe("api-errors-creating-the-backup-job", f"creation answered 503, Job found later; {phase(done)}", lost)


@scenario(
    "watch-streams-dropped",
    "the API server ends the operator's first three watch streams on VectorMigrations at once",
    "kopf watches again; the migration is reconciled as usual; Succeeded",
)
async def test_dropped_watch_streams(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _):
        watches = cluster.emulator["get", VMIGS, kmock.params(watch="true")]
        dropping = watches[0:3] << b""
        async with running_operator(cluster):
            await cluster.apply_secret("shop-app", secret_for(database))
            await cluster.apply(migration(backup={"enabled": False}))
            done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"), timeout=120)
            dropped = len(list(dropping))

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert phase(done) == "Succeeded", done["status"]["message"]
    assert dropped == 3
    assert lost == 0
    observe("watch-streams-dropped", f"3 watch streams ended at once, then {phase(done)}", lost)


@scenario(
    "backup-job-past-its-deadline",
    "the backup Job runs past activeDeadlineSeconds (the Job controller fails it with DeadlineExceeded)",
    "BackupFailed naming DeadlineExceeded; nothing changed; no swap",
)
async def test_a_backup_job_past_its_deadline(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    deadline = "DeadlineExceeded: Job was active longer than specified deadline"
    async with (
        running_cluster(tmp_path, postgres.bin_dir, fail_job=lambda job: deadline) as (cluster, _),
        running_operator(cluster),
    ):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration())
        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"), timeout=60)

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert phase(done) == "Failed"
    assert condition(done, "Stalled")["reason"] == "BackupFailed"
    assert "DeadlineExceeded" in done["status"]["message"] and "nothing was changed" in done["status"]["message"]
    assert await snapshot(conn) == before
    observe("backup-job-past-its-deadline", f"{phase(done)} (BackupFailed, DeadlineExceeded); no swap", lost)


@scenario(
    "resource-deleted-mid-flight",
    "the VectorMigration is deleted while its backup Job is still pending",
    "the operator stops before the swap, releases the database lock and its finalizer; nothing changed",
)
async def test_the_resource_deleted_in_the_middle(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner), running_operator(cluster):
        runner.enabled = False  # the Job stays pending, as on a cluster without room for its pod
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration())
        await cluster.wait_for("shop", lambda r: phase(r) == "Backup")
        await cluster.delete("shop")
        await cluster.wait_until_gone("shop")

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert await snapshot(conn) == before
    held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert held == 0
    observe("resource-deleted-mid-flight", "gone before the swap; database unchanged, no lock held", lost)
