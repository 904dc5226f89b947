"""The operator against a Kubernetes API emulator and a real PostgreSQL: a user's day."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.chart import assert_allowed_by_the_chart
from tests.cluster import JobRunner, condition, phase, running_cluster, running_operator
from tests.gitops import argo_health, kstatus, kubectl_wait_ready
from tests.scenarios import create_rich_database, snapshot
from vector_migration.api import JobDefaults
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.kube.metrics import OperatorMetrics
from vector_migration.vocabulary import Phase

PASSWORD = "Kx9-distinctive-Pa55word"


def secret_for(database: ConnectionParams) -> dict[str, str]:
    # CloudNativePG's app-secret layout
    return {"host": database.host or "", "dbname": database.dbname or "", "username": "postgres", "password": PASSWORD}


def migration(name: str = "shop", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ruvector.dev/v1alpha1",
        "kind": "VectorMigration",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "database": {"secretRef": {"name": "shop-app"}},
            "target": {"extension": "ruvector_standin"},
            # The latency gate compares one burst of queries against a baseline taken minutes earlier,
            # so load on a 2-core machine can fail a healthy migration (the verification issue);
            # these tests are about the operator, so the gate gets room that noise cannot use up.
            "verify": {"sampleQueries": 10, "k": 5, "latencySlackMs": 50},
            **spec,
        },
    }


async def test_apply_and_the_migration_becomes_ready(
    postgres: EmbeddedPostgres,
    database: ConnectionParams,
    conn: asyncpg.Connection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await create_rich_database(conn)
    before = await snapshot(conn)
    metrics = OperatorMetrics()
    async with (
        running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner),
        running_operator(cluster, metrics),
    ):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration())

        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"))

        assert phase(done) == "Succeeded", done["status"]["message"]
        assert condition(done, "Ready")["status"] == "True"
        assert condition(done, "Stalled")["status"] == "False"
        assert condition(done, "BackupCompleted")["status"] == "True"
        assert (argo_health(done)[0], kstatus(done), kubectl_wait_ready(done)) == ("Healthy", "Current", True)
        assert done["status"]["backup"]["location"] == f"pvc/shop-backup/{database.dbname}-default_shop-17252dab.dump"
        jobs = await cluster.list("batch/v1", "jobs")
        assert [j["metadata"]["name"] for j in jobs] == runner.started
        assert jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "VectorMigration"
        await cluster.eventually(lambda: any(e["reason"] == "Succeeded" for e in cluster.posted_events()))
        events = [(e["type"], e["reason"]) for e in cluster.posted_events() if e["reason"] != "MigrationWarning"]
        assert events == [
            ("Normal", "Checklist"), ("Normal", "Backup"), ("Normal", "Swap"), ("Normal", "Reindex"),
            ("Normal", "Verify"), ("Normal", "Succeeded"),
        ]  # fmt: skip
        # the status's warnings, each once, right after the checklist that found them: among them, that
        # the target is a stand-in, which a user must be able to see
        warned = [e for e in cluster.posted_events() if e["reason"] == "MigrationWarning"]
        assert [e["message"] for e in warned] == done["status"]["warnings"]
        assert all(e["type"] == "Warning" for e in warned) and any("stand-in" in e["message"] for e in warned)
        assert cluster.posted_events()[1]["reason"] == "MigrationWarning"
        # `kubectl describe` shows who reported them (its "From" column), not kopf's defaults
        assert {(e["source"]["component"], e["reportingComponent"]) for e in cluster.posted_events()} == {
            ("vector-migration-operator", "vector-migration-operator")
        }
        assert done["metadata"]["finalizers"] == ["ruvector.dev/finalizer"]
        configmaps = {c["metadata"]["name"]: c for c in await cluster.list("v1", "configmaps")}
        report = configmaps["shop-report"]["data"]["report.html"]  # for the change ticket
        assert "<strong>Succeeded</strong>" in report and 'id="chart-timeline"' in report
        scraped = metrics.registry.get_sample_value
        await cluster.eventually(lambda: scraped("vector_migration_migrations", {"phase": "Succeeded"}) == 1)
        assert scraped("vector_migration_migrations", {"phase": "Verify"}) == 0
        for ended in ("Checklist", "Backup", "Swap", "Reindex", "Verify"):
            assert scraped("vector_migration_phase_duration_seconds_count", {"phase": ended}) == 1, ended
        assert scraped("vector_migration_phase_duration_seconds_sum", {"phase": "Swap"}) == pytest.approx(
            done["status"]["timings"]["swapSeconds"], abs=0.01
        )
        assert_allowed_by_the_chart(cluster.operator_requests())
        # The password is in the Secret and nowhere else: not in any request the operator made (status,
        # events, ConfigMaps, Job specs) and not in any log line, kopf's DEBUG ones included.
        assert PASSWORD not in cluster.traffic()
        assert caplog.text and PASSWORD not in caplog.text
    after = await snapshot(conn)
    assert after.rows == before.rows
    assert "ruvector_standin" in after.extensions and "vector" not in after.extensions


async def test_manual_approval_needs_the_current_plan_hash(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration(approval="Manual", backup={"enabled": False}))
        # The phase moves to AwaitingApproval a moment before the approval step reports its hold:
        # wait for the condition GitOps tools read, as a person would with kubectl wait.
        waiting = await cluster.wait_for(
            "shop", lambda r: condition(r, "Reconciling").get("reason") == "AwaitingApproval"
        )
        plan_hash = waiting["status"]["planHash"]
        assert argo_health(waiting) == ("Suspended", f"AwaitingApproval: {waiting['status']['message']}")
        assert (kstatus(waiting), kubectl_wait_ready(waiting)) == ("InProgress", False)
        plans = await cluster.list("v1", "configmaps")
        assert [(c["metadata"]["name"], c["data"]["planHash"]) for c in plans] == [("shop-plan", plan_hash)]
        assert 'DROP EXTENSION "vector" RESTRICT' in plans[0]["data"]["statements.sql"]

        await cluster.annotate("shop", {"ruvector.dev/approve": "sha256:0000000000000000"})
        stale = await cluster.wait_for("shop", lambda r: "is stale" in r["status"].get("message", ""))
        assert phase(stale) == "AwaitingApproval"
        assert await snapshot(conn) == before

        await cluster.annotate("shop", {"ruvector.dev/approve": plan_hash})
        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"))
        assert phase(done) == "Succeeded", done["status"]["message"]
        assert_allowed_by_the_chart(cluster.operator_requests())
    assert (await snapshot(conn)).rows == before.rows


async def test_a_dry_run_publishes_the_plan_and_changes_nothing(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner), running_operator(cluster):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration(dryRun=True))
        held = await cluster.wait_for("shop", lambda r: condition(r, "Ready").get("reason") == "DryRun")
        assert phase(held) == "Checklist"
        assert (argo_health(held)[0], kstatus(held), kubectl_wait_ready(held)) == ("Healthy", "Current", True)
        assert condition(held, "ChecklistPassed")["status"] == "True"
        assert [c["metadata"]["name"] for c in await cluster.list("v1", "configmaps")] == ["shop-plan"]
        assert runner.started == []
    assert await snapshot(conn) == before


async def test_pause_holds_between_phases_and_resume_continues(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        await cluster.apply_secret("shop-app", secret_for(database))
        resource = migration(backup={"enabled": False})
        resource["metadata"]["annotations"] = {"ruvector.dev/paused": "true"}
        await cluster.apply(resource)
        paused = await cluster.wait_for("shop", lambda r: condition(r, "Reconciling").get("reason") == "Paused")
        assert "paused by the annotation ruvector.dev/paused" in paused["status"]["message"]
        assert (argo_health(paused)[0], kstatus(paused)) == ("Suspended", "InProgress")
        assert await snapshot(conn) == before

        await cluster.annotate("shop", {"ruvector.dev/paused": "false"})
        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"))
        assert phase(done) == "Succeeded", done["status"]["message"]


async def test_the_rollback_annotation_undoes_a_succeeded_migration(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration(backup={"enabled": False}))
        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"))
        assert phase(done) == "Succeeded", done["status"]["message"]

        await cluster.annotate("shop", {"ruvector.dev/rollback": "true"})
        undone = await cluster.wait_for("shop", lambda r: phase(r) in ("RolledBack", "Failed"))

        assert phase(undone) == "RolledBack", undone["status"]["message"]
        assert condition(undone, "RolledBack")["status"] == "True"
        assert (condition(undone, "Ready")["status"], condition(undone, "Ready")["reason"]) == (
            "True",
            "RollbackRequested",
        )
        assert (argo_health(undone)[0], kstatus(undone)) == ("Healthy", "Current")
        await cluster.eventually(
            lambda: {("Normal", "RollingBack"), ("Normal", "RolledBack")} <= set(_event_reasons(cluster))
        )
    after = await snapshot(conn)
    assert (after.rows, after.indexes) == (before.rows, before.indexes)
    assert "vector" in after.extensions and "ruvector_standin" not in after.extensions


def _event_reasons(cluster: Any) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in cluster.posted_events()]


async def test_a_parallel_cutover_publishes_its_weight_and_waits_for_promotion(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    from tests.test_parallel import EMBEDDING_TYPE, create_shop, docs_before

    await create_shop(conn)
    before = await docs_before(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(
            migration(
                strategy="Parallel",
                backup={"enabled": False},
                parallel={"keepOldFor": "0s"},
                cutover={"steps": [{"setWeight": 50}, {"pause": {}}]},
            )
        )
        paused = await cluster.wait_for(
            "shop", lambda r: condition(r, "Reconciling").get("reason") == "AwaitingPromotion" or phase(r) == "Failed"
        )
        assert phase(paused) == "Cutover", paused["status"]["message"]
        assert paused["status"]["cutover"]["weight"] == 50
        assert (argo_health(paused)[0], kstatus(paused)) == ("Suspended", "InProgress")
        configmaps = {c["metadata"]["name"]: c for c in await cluster.list("v1", "configmaps")}
        routing = configmaps["shop-cutover"]["data"]
        assert routing["weight"] == "50"
        assert json.loads(routing["tables.json"]) == {"public.docs": "public.docs_vmig_shadow"}

        await cluster.annotate("shop", {"ruvector.dev/promote": "true"})
        # The status says Succeeded as the phase ends; the handler's own patch then removes the
        # consumed annotation, so wait for both (a promotion never removed times out here).
        done = await cluster.wait_for(
            "shop",
            lambda r: (
                phase(r) in ("Failed", "RolledBack")
                or (phase(r) == "Succeeded" and "ruvector.dev/promote" not in (r["metadata"].get("annotations") or {}))
            ),
        )

        assert phase(done) == "Succeeded", done["status"]["message"]
        assert done["status"]["parallel"]["lockWindowSeconds"] < 1.0
        configmaps = {c["metadata"]["name"]: c for c in await cluster.list("v1", "configmaps")}
        assert configmaps["shop-cutover"]["data"]["weight"] == "100"
        assert_allowed_by_the_chart(cluster.operator_requests())
    assert await docs_before(conn) == before
    assert await conn.fetchval(EMBEDDING_TYPE) == "ruvector(8)"


async def test_a_failed_backup_job_stops_before_the_swap(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    def disk_full(job: dict[str, Any]) -> str:
        return "pg_dump: error: could not write to output file: No space left on device"

    metrics = OperatorMetrics()
    async with (
        running_cluster(tmp_path, postgres.bin_dir, fail_job=disk_full) as (cluster, _),
        running_operator(cluster, metrics),
    ):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration())
        failed = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"))
        assert phase(failed) == "Failed"
        assert condition(failed, "Stalled")["status"] == "True"
        assert condition(failed, "Stalled")["reason"] == "BackupFailed"
        assert "No space left on device" in failed["status"]["message"]
        assert condition(failed, "BackupCompleted")["status"] == "False"
        assert argo_health(failed) == ("Degraded", f"BackupFailed: {failed['status']['message']}")
        assert (kstatus(failed), kubectl_wait_ready(failed)) == ("Failed", False)
        await cluster.eventually(
            lambda: ("Warning", "BackupFailed") in [(e["type"], e["reason"]) for e in cluster.posted_events()]
        )
        await cluster.eventually(
            lambda: (
                metrics.registry.get_sample_value("vector_migration_failures_total", {"reason": "BackupFailed"}) == 1
            )
        )
        assert metrics.registry.get_sample_value("vector_migration_migrations", {"phase": "Failed"}) == 1
    assert await snapshot(conn) == before


async def test_a_missing_secret_stalls_with_a_reason_and_leaks_nothing(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        await cluster.apply_secret("other-secret", secret_for(database))
        await cluster.apply(migration())
        stalled = await cluster.wait_for("shop", lambda r: phase(r) == "Failed")
        assert condition(stalled, "Stalled")["reason"] == "SecretUnavailable"
        assert stalled["status"]["message"] == "secret default/shop-app does not exist"
        assert argo_health(stalled) == ("Degraded", "SecretUnavailable: secret default/shop-app does not exist")

        await cluster.apply_secret("broken", {"password": PASSWORD})  # no host, no dbname
        await cluster.apply(migration("broken", database={"secretRef": {"name": "broken"}}))
        broken = await cluster.wait_for("broken", lambda r: phase(r) == "Failed")
        assert (
            broken["status"]["message"]
            == "secret default/broken: secret lacks key(s) host, dbname, user (or a 'uri' key)"
        )
        assert PASSWORD not in cluster.traffic().replace(_encoded(PASSWORD), "")
    assert await snapshot(conn) == before


def _encoded(secret: str) -> str:
    import base64

    return base64.b64encode(secret.encode()).decode()


async def test_an_operator_restart_continues_without_repeating_finished_work(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner):
        async with running_operator(cluster):
            await cluster.apply_secret("shop-app", secret_for(database))
            await cluster.apply(migration(approval="Manual"))
            waiting = await cluster.wait_for("shop", lambda r: phase(r) == "AwaitingApproval")
        # the operator is gone; a person approves meanwhile; a new operator process starts
        await cluster.annotate("shop", {"ruvector.dev/approve": waiting["status"]["planHash"]})
        async with running_operator(cluster):
            done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"))
        assert phase(done) == "Succeeded", done["status"]["message"]
        assert len(runner.started) == 1  # the verified backup was not taken twice
    assert (await snapshot(conn)).rows == before.rows
    assert await conn.fetchval("SELECT count(*) FROM vector_migration.journal WHERE event = 'swapped'") == 1


async def test_deleting_a_waiting_migration_releases_it_and_changes_nothing(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    on_fast_disks = JobDefaults(storage_class_name="fast-ssd")  # the chart's jobs.storageClassName
    async with (
        running_cluster(tmp_path, postgres.bin_dir) as (cluster, _),
        running_operator(cluster, job_defaults=on_fast_disks),
    ):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration(approval="Manual"))
        await cluster.wait_for("shop", lambda r: phase(r) == "AwaitingApproval")

        await cluster.delete("shop")

        await cluster.wait_until_gone("shop")
        # the verified backup outlives the resource
        claims = await cluster.list("v1", "persistentvolumeclaims")
        assert [c["metadata"]["name"] for c in claims] == ["shop-backup"]
        assert claims[0]["spec"]["storageClassName"] == "fast-ssd"
    assert await snapshot(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


async def test_a_resource_an_older_release_reconciled_is_not_stuck_when_deleted(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        await cluster.apply_secret("shop-app", secret_for(database))
        resource = migration(dryRun=True)
        resource["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]  # kopf's default, before 0.2
        await cluster.apply(resource)
        # kopf swaps the finalizers when the handler returns, a moment after the status is written
        await cluster.wait_for(
            "shop",
            lambda r: (
                condition(r, "Ready").get("status") == "True"
                and r["metadata"].get("finalizers") == ["ruvector.dev/finalizer"]
            ),
        )

        await cluster.delete("shop")

        await cluster.wait_until_gone("shop")


async def test_deleting_during_the_backup_stops_before_the_swap_and_can_take_the_backup_along(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner), running_operator(cluster):
        runner.enabled = False  # the backup Job's pod never gets scheduled
        await cluster.apply_secret("shop-app", secret_for(database))
        resource = migration()
        resource["metadata"]["annotations"] = {"ruvector.dev/delete-backup": "true"}
        await cluster.apply(resource)
        await cluster.wait_for("shop", lambda r: "backup Job" in (r.get("status") or {}).get("message", ""))

        await cluster.delete("shop")
        await cluster.wait_until_gone("shop")
        runner.enabled = True  # too late: nothing may swap now

        assert await cluster.list("v1", "persistentvolumeclaims") == []
        assert_allowed_by_the_chart(cluster.operator_requests())
        await cluster.eventually(
            lambda: ("Normal", "BackupDeleted") in [(e["type"], e["reason"]) for e in cluster.posted_events()]
        )
    assert await snapshot(conn) == before


async def test_deleting_while_the_swap_waits_for_a_lock_leaves_the_database_as_it_was(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    application = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration(backup={"enabled": False}, lockTimeout="2s"))
        async with application.transaction():
            await application.execute("LOCK TABLE items IN ACCESS SHARE MODE")  # a long read holds the table
            await cluster.wait_for("shop", lambda r: phase(r) == "Swap")

            await cluster.delete("shop")  # while the swap transaction waits for its lock

            await cluster.wait_until_gone("shop")
        await application.close()
    assert await snapshot(conn) == before
    assert await conn.fetchval("SELECT to_regclass('vector_migration.journal')") is None  # never committed


@contextlib.asynccontextmanager
async def held_in(stop_in: str, runner: JobRunner, database: ConnectionParams) -> AsyncIterator[None]:
    """Something the application does that keeps the migration inside one phase until released."""
    if stop_in == "Backup":  # the backup Job's pod is not scheduled yet
        runner.enabled = False
        yield
        runner.enabled = True
        return
    application = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    try:
        async with application.transaction(isolation="repeatable_read"):
            if stop_in == "Swap":  # a long read holds a vector table: the swap waits for its lock
                await application.execute("LOCK TABLE items IN ACCESS SHARE MODE")
            else:  # an old snapshot: CREATE INDEX CONCURRENTLY waits for it to end
                await application.fetchval("SELECT 1")
            yield
    finally:
        await application.close()


@pytest.mark.parametrize("stop_in", ["Backup", "Swap", "Reindex"])
async def test_an_operator_stopped_in_the_middle_of_a_phase_finishes_the_migration_once(
    stop_in: str, postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner):
        async with held_in(stop_in, runner, database):
            async with running_operator(cluster):
                await cluster.apply_secret("shop-app", secret_for(database))
                await cluster.apply(migration(reindex={"mode": "Concurrent"}, lockTimeout="30s"))
                await cluster.wait_for("shop", lambda r: phase(r) == stop_in)
                await asyncio.sleep(1.0)  # well inside the phase: a Job pending, a lock or a snapshot awaited
            stopped = await cluster.get("shop")
            assert stopped is not None and phase(stopped) == stop_in
        async with running_operator(cluster):
            done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"))
        assert phase(done) == "Succeeded", done["status"]["message"]
        assert condition(done, "Ready")["status"] == "True"
        assert len(runner.started) == 1  # one backup, taken once
    assert (await snapshot(conn)).rows == before.rows
    assert await conn.fetchval("SELECT count(*) FROM vector_migration.journal WHERE event = 'swapped'") == 1


async def test_of_two_replicas_only_the_higher_priority_reconciles_and_the_other_takes_over(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    active, standby = OperatorMetrics(), OperatorMetrics()

    def seen_by(metrics: OperatorMetrics) -> float:
        return sum(
            metrics.registry.get_sample_value("vector_migration_migrations", {"phase": p.value}) or 0 for p in Phase
        )

    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner):
        peering = "vmo-vector-migration-operator"  # the name the chart gives it for release "vmo"
        await cluster.create_peering(peering)
        async with running_operator(cluster, standby, peering=(peering, 100)):
            async with running_operator(cluster, active, peering=(peering, 200)):
                await asyncio.sleep(3)  # the replicas find each other through the peering object
                await cluster.apply_secret("shop-app", secret_for(database))
                await cluster.apply(migration())
                done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"))
                assert phase(done) == "Succeeded", done["status"]["message"]
                await cluster.eventually(lambda: seen_by(active) == 1)
                assert seen_by(standby) == 0  # paused in favour of the higher priority
            # the active replica is gone: the standby resumes and adopts the finished migration
            await cluster.eventually(lambda: seen_by(standby) == 1, timeout=30)
        assert len(runner.started) == 1
        assert_allowed_by_the_chart(cluster.operator_requests())
    assert await conn.fetchval("SELECT count(*) FROM vector_migration.journal WHERE event = 'swapped'") == 1


async def test_a_succeeded_migration_is_checked_for_drift_on_a_timer_and_the_database_is_left_alone(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    metrics = OperatorMetrics()
    async with (
        running_cluster(tmp_path, postgres.bin_dir) as (cluster, _runner),
        running_operator(cluster, metrics, drift_timer=0.5),
    ):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration(backup={"enabled": False}, driftCheck={"interval": "1s"}))
        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"))
        assert phase(done) == "Succeeded", done["status"]["message"]
        in_sync = await cluster.wait_for("shop", lambda r: bool(condition(r, "Drifted")))
        assert condition(in_sync, "Drifted")["status"] == "False"

        # langchain-postgres' PGVector and LlamaIndex run this at start-up
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        before = await snapshot(conn)

        drifted = await cluster.wait_for("shop", lambda r: (condition(r, "Drifted") or {}).get("status") == "True")
        assert condition(drifted, "Drifted")["reason"] == "Drifted"
        assert "extension vector is installed again" in condition(drifted, "Drifted")["message"]
        assert phase(drifted) == "Succeeded"  # the migration did what it said; the database moved since
        await cluster.eventually(lambda: ("Warning", "Drifted") in _event_reasons(cluster))
        assert _event_reasons(cluster).count(("Warning", "Drifted")) == 1
        # the drift timer's finding reaches the metrics an alert reads, without a reconciliation
        who = {"namespace": "default", "name": "shop"}
        assert metrics.registry.get_sample_value("vector_migration_drifted", who) == 1
        drifted_condition = {**who, "type": "Drifted", "status": "True", "reason": "Drifted"}
        assert metrics.registry.get_sample_value("vector_migration_status_condition", drifted_condition) == 1
        assert await snapshot(conn) == before  # the check never changes the database


async def test_kept_old_tables_neither_delay_a_rollback_nor_outstay_keep_old_for(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    # While keepOldFor runs the reconciliation ends (kopf would sleep through a retry, and through a
    # person's annotation with it); the timer drops what was kept once it is due.
    from tests.test_parallel import create_shop

    await create_shop(conn)
    kept = "SELECT to_regclass('public.docs_pgvector_old') IS NOT NULL"
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster, drift_timer=1.0):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration(strategy="Parallel", backup={"enabled": False}, parallel={"keepOldFor": "4s"}))
        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed"))
        assert phase(done) == "Succeeded", done["status"]["message"]
        assert await conn.fetchval(kept)

        gone = await cluster.wait_for("shop", lambda r: "dropped" in r["status"]["message"], timeout=30)

        assert not await conn.fetchval(kept)
        assert phase(gone) == "Succeeded" and condition(gone, "Ready")["status"] == "True"
