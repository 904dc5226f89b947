"""The operator against a Kubernetes API emulator and a real PostgreSQL: a user's day."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from tests.cluster import condition, phase, running_cluster, running_operator
from tests.scenarios import create_rich_database, snapshot
from vector_migration.demo import EmbeddedPostgres
from vector_migration.sql import ConnectionParams

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
            "verify": {"sampleQueries": 10, "k": 5},
            **spec,
        },
    }


async def test_apply_and_the_migration_becomes_ready(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner), running_operator(cluster):
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration())

        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"))

        assert phase(done) == "Succeeded", done["status"]["message"]
        assert condition(done, "Ready")["status"] == "True"
        assert condition(done, "Stalled")["status"] == "False"
        assert condition(done, "BackupCompleted")["status"] == "True"
        assert done["status"]["backup"]["location"] == f"pvc/shop-backup/{database.dbname}-default_shop-2ff5a404.dump"
        jobs = await cluster.list("batch/v1", "jobs")
        assert [j["metadata"]["name"] for j in jobs] == runner.started
        assert jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "VectorMigration"
        events = [(e["type"], e["reason"]) for e in cluster.posted_events()]
        assert events == [
            ("Normal", "Checklist"), ("Normal", "Backup"), ("Normal", "Swap"), ("Normal", "Reindex"),
            ("Normal", "Verify"), ("Normal", "Succeeded"),
        ]  # fmt: skip
        assert PASSWORD not in cluster.traffic()
    after = await snapshot(conn)
    assert after.rows == before.rows
    assert "ruvector_standin" in after.extensions and "vector" not in after.extensions
