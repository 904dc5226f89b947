"""The operator logs in as it would on a real cluster: TLS with a private CA, through the official client's loaders.

Each login path a pod or a person has (a service-account directory, a kubeconfig with the CA's
data or a CA file, client certificates) reconciles a migration to Ready against the emulator
served over HTTPS, whose authentication stand-in answers 401 to anything it did not issue.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Literal

import asyncpg
import kopf
import pytest

from tests.cluster import Cluster, condition, phase, running_cluster, running_operator
from tests.scenarios import create_rich_database, snapshot
from tests.test_operator import migration, secret_for
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres, create_database
from vector_migration.kube.client import in_cluster_configuration, kubeconfig_configuration
from vector_migration.kube.controller import LoginFunction


def service_account_login(
    cluster: Cluster, reread: datetime.timedelta = datetime.timedelta(minutes=1)
) -> LoginFunction:
    directory, environ = cluster.service_account()
    return lambda: in_cluster_configuration(directory, environ, token_reread=reread)


def kubeconfig_login(
    cluster: Cluster, ca: Literal["data", "file"], auth: Literal["token", "certificate"]
) -> LoginFunction:
    path = cluster.kubeconfig(ca=ca, auth=auth)
    return lambda: kubeconfig_configuration(str(path))


async def test_in_a_pod_the_service_account_runs_a_whole_migration_over_tls(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, runner):
        async with running_operator(cluster, login=service_account_login(cluster)):
            await cluster.apply_secret("shop-app", secret_for(database))
            await cluster.apply(migration())

            done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"))

        assert phase(done) == "Succeeded", done["status"]["message"]
        assert condition(done, "Ready")["status"] == "True"
        assert runner.started == ["shop-backup-17252dab"]  # the Job was created through the same login
        assert cluster.authenticator.rejected == 0
    assert (await snapshot(conn)).rows == before.rows


@pytest.mark.parametrize(("ca", "auth"), [("data", "token"), ("file", "token"), ("data", "certificate")])
async def test_from_a_kubeconfig_the_operator_reconciles_to_ready(
    postgres: EmbeddedPostgres,
    database: ConnectionParams,
    conn: asyncpg.Connection,
    tmp_path: Path,
    ca: Literal["data", "file"],
    auth: Literal["token", "certificate"],
) -> None:
    await create_rich_database(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _):
        async with running_operator(cluster, login=kubeconfig_login(cluster, ca, auth)):
            await cluster.apply_secret("shop-app", secret_for(database))
            await cluster.apply(migration(dryRun=True))

            held = await cluster.wait_for("shop", lambda r: condition(r, "Ready").get("status") == "True")

        assert condition(held, "Ready")["reason"] == "DryRun"
        assert [c["metadata"]["name"] for c in await cluster.list("v1", "configmaps")] == ["shop-plan"]
        assert cluster.authenticator.rejected == 0


async def test_a_token_the_api_server_did_not_issue_gets_nowhere(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _):
        path = cluster.kubeconfig()
        path.write_text(path.read_text().replace("token: ", "token: forged"))
        await cluster.apply_secret("shop-app", secret_for(database))
        await cluster.apply(migration(dryRun=True))
        # The operator stops (its pod restarts, visibly) rather than running without access.
        with pytest.raises(kopf.LoginError):
            async with running_operator(cluster, login=lambda: kubeconfig_configuration(str(path))):
                await cluster.eventually(lambda: cluster.authenticator.rejected > 0)

        assert (await cluster.get("shop") or {}).get("status") is None  # the operator never got in


async def test_a_token_rotated_on_disk_is_picked_up(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    await create_database(postgres.params(), f"{database.dbname}_second")
    second = postgres.params(f"{database.dbname}_second")
    await create_rich_database_at(second)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _):
        directory, environ = cluster.service_account()
        first_token = (directory / "token").read_text()
        login = lambda: in_cluster_configuration(directory, environ, token_reread=datetime.timedelta(0))  # noqa: E731
        async with running_operator(cluster, login=login):
            await cluster.apply_secret("shop-app", secret_for(database))
            await cluster.apply(migration(dryRun=True))
            await cluster.wait_for("shop", lambda r: condition(r, "Ready").get("status") == "True")

            # The kubelet writes a new token; the old one stops being accepted.
            (directory / "token").write_text(cluster.authenticator.issue())
            cluster.authenticator.revoke(first_token)
            await cluster.apply_secret("other-app", secret_for(second))
            other = migration("other", dryRun=True)
            other["spec"]["database"]["secretRef"]["name"] = "other-app"
            await cluster.apply(other)
            held = await cluster.wait_for("other", lambda r: condition(r, "Ready").get("status") == "True")

            # kopf's own requests (its watch, its Events) still carry the token it logged in with; the
            # 401 sends it back to the login handler, which hands over the rotated one.
            await cluster.eventually(
                lambda: any(e["involvedObject"]["name"] == "other" for e in cluster.posted_events())
            )

        assert condition(held, "Ready")["reason"] == "DryRun"


async def create_rich_database_at(params: ConnectionParams) -> None:
    connection = await asyncpg.connect(host=params.host, user=params.user, database=params.dbname)
    try:
        await create_rich_database(connection)
    finally:
        await connection.close()
