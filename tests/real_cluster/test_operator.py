"""The operator as the chart deploys it, against a real kube-apiserver: with the chart's RBAC and nothing more.

The chart is installed as `helm install` would (tests/real_cluster/install.py); the operator runs as
a process with the chart's arguments and a token the API server issued for the chart's
ServiceAccount. A request the chart does not grant is a 403 from the real RBAC authorizer, which
fails the test. The migration needs no Job (its backup is off): the node stand-in that runs Job
pods is not built yet.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster import condition, phase
from tests.gitops import argo_health, kstatus
from tests.real_cluster.control_plane import ControlPlane, free_port
from tests.real_cluster.install import install_chart, service_account_kubeconfig
from tests.real_cluster.node import NodeStandIn
from tests.test_operator import secret_for
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.vocabulary import API_GROUP, API_VERSION, PLURAL

OPERATOR_NAMESPACE = "vmig-system"
SERVICE_ACCOUNT = "vmo-vector-migration-operator"
SHOP = (
    "CREATE EXTENSION vector; CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));"
    " INSERT INTO items SELECT i, ARRAY[i, i + 1, i + 2]::real[]::vector FROM generate_series(1, 200) i;"
)


def operator_arguments(objects: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The chart's container arguments and plain environment, with ports this machine has free."""
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = []
    for arg in container["args"]:
        if arg.startswith("--liveness="):
            arg = f"--liveness=http://127.0.0.1:{free_port()}/healthz"
        elif arg.startswith("--metrics-port="):
            arg = f"--metrics-port={free_port()}"
        elif arg.startswith("--scratch-dir="):
            continue  # the pod's emptyDir; the operator's default (a temporary directory) here
        args.append(arg)
    environment = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return args, environment


@dataclass
class RunningOperator:
    """The operator's process, as the chart runs it, and where it writes its log."""

    process: subprocess.Popen[bytes]
    log: Path

    def said(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def operator(
    admin: client.ApiClient, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningOperator]:
    """The chart installed, and the operator running with its arguments and its ServiceAccount's token."""
    objects = install_chart(admin, OPERATOR_NAMESPACE)
    directory = tmp_path_factory.mktemp("operator")
    kubeconfig = service_account_kubeconfig(admin, control_plane, OPERATOR_NAMESPACE, SERVICE_ACCOUNT, directory)
    args, environment = operator_arguments(objects)
    with (directory / "operator.log").open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "vector-migration"), *args],
            env={**os.environ, **environment, "KUBECONFIG": str(kubeconfig)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    running = RunningOperator(process, directory / "operator.log")
    yield running
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    said = running.said()
    # the chart's RBAC sufficed: a 403 says Forbidden ("403" alone may be part of a number)
    assert "forbidden" not in said.lower(), said[-3000:]


def arrange(
    admin: client.ApiClient, database: ConnectionParams, namespace: str, new_namespace: bool = True, **spec: Any
) -> dict[str, str]:
    """A namespace with the database's Secret and a VectorMigration "shop" of it; the Secret's data."""
    core = client.CoreV1Api(admin)
    if new_namespace:
        core.create_namespace({"metadata": {"name": namespace}})
    data = secret_for(database)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "shop-app"}, "stringData": data})
    client.CustomObjectsApi(admin).create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, {
        "apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "VectorMigration",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {"database": {"secretRef": {"name": "shop-app"}}, "target": {"extension": "ruvector_standin"},
                 "backup": {"enabled": False}, "verify": {"sampleQueries": 10, "k": 5, "latencySlackMs": 50},
                 **spec},
    })  # fmt: skip
    return data


async def test_the_operator_with_only_the_charts_rbac_migrates_a_database(
    admin: client.ApiClient, control_plane: ControlPlane, operator: RunningOperator,
    database: ConnectionParams, conn: asyncpg.Connection,
) -> None:  # fmt: skip
    await conn.execute(SHOP)
    data = arrange(admin, database, "rbac-only")

    done = await until(
        admin, "shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), operator, "rbac-only"
    )

    assert phase(done) == "Succeeded", done["status"].get("message")
    assert condition(done, "Ready")["status"] == "True"
    assert data["password"] not in operator.said()
    column = await conn.fetchval("SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                                 " WHERE attrelid = 'items'::regclass AND attname = 'embedding'")  # fmt: skip
    assert column.startswith("ruvector")
    core = client.CoreV1Api(admin)
    assert {e.reason for e in core.list_namespaced_event("rbac-only").items} >= {"Checklist", "Swap", "Succeeded"}
    report = core.read_namespaced_config_map("shop-report", "rbac-only")
    assert report.metadata.owner_references[0].kind == "VectorMigration"
    # what a person and GitOps see, from the status the real server stored
    assert (argo_health(done)[0], kstatus(done)) == ("Healthy", "Current")
    waited = await asyncio.to_thread(
        control_plane.kubectl, "wait", "--for=condition=Ready", "vmig/shop", "-n", "rbac-only"
    )
    assert waited.returncode == 0, waited.stderr
    # real kubectl finds the plugin on PATH, as a user's does
    status = await asyncio.to_thread(control_plane.kubectl, "vmig", "status", "shop", "-n", "rbac-only")
    assert status.returncode == 0 and "Succeeded" in status.stdout, status.stderr

    # deleted: the finalizer runs, and the real garbage collector takes what the migration owned
    custom = client.CustomObjectsApi(admin)
    await asyncio.to_thread(custom.delete_namespaced_custom_object, API_GROUP, API_VERSION, "rbac-only", PLURAL, "shop")
    await gone(lambda: custom.get_namespaced_custom_object(API_GROUP, API_VERSION, "rbac-only", PLURAL, "shop"))
    await gone(lambda: core.read_namespaced_config_map("shop-report", "rbac-only"))


async def test_an_approval_given_after_the_api_server_restarted_is_seen_and_the_swap_runs_once(
    admin: client.ApiClient, control_plane: ControlPlane, operator: RunningOperator,
    database: ConnectionParams, conn: asyncpg.Connection,
) -> None:  # fmt: skip
    await conn.execute(SHOP)
    arrange(admin, database, "held", approval="Manual")
    waiting = await until(admin, "shop", lambda r: phase(r) == "AwaitingApproval", operator, "held")

    await asyncio.to_thread(control_plane.restart_apiserver)  # the operator's watches break and come back
    # approved as a person would, through real kubectl's plugin discovery
    approved = await asyncio.to_thread(control_plane.kubectl, "vmig", "approve", "shop", "-n", "held", "--yes")
    assert approved.returncode == 0, approved.stderr
    assert waiting["status"]["planHash"] in approved.stdout
    done = await until(admin, "shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), operator, "held")

    assert phase(done) == "Succeeded", done["status"].get("message")
    swaps = [e for e in client.CoreV1Api(admin).list_namespaced_event("held").items if e.reason == "Swap"]
    assert sum(e.count or 1 for e in swaps) == 1


async def test_the_backup_job_runs_through_the_real_job_controller_and_goes_with_the_migration(
    admin: client.ApiClient, operator: RunningOperator, postgres: EmbeddedPostgres,
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path,
) -> None:  # fmt: skip
    await conn.execute(SHOP)
    with NodeStandIn(admin, tmp_path, postgres.bin_dir) as node:
        arrange(admin, database, "backed-up", backup={"enabled": True})
        done = await until(admin, "shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), operator,
                           "backed-up")  # fmt: skip
    assert node.errors == []
    pods = client.CoreV1Api(admin).list_namespaced_pod("backed-up").items
    said = [s.state.terminated.message for p in pods for s in p.status.container_statuses or [] if s.state.terminated]
    assert phase(done) == "Succeeded", f"{done['status'].get('message')}: {said}"
    assert done["status"]["backup"]["sizeBytes"] > 0 and len(done["status"]["backup"]["sha256"]) == 64
    batch, core = client.BatchV1Api(admin), client.CoreV1Api(admin)
    (job,) = batch.list_namespaced_job("backed-up").items
    assert node.ran and job.status.succeeded == 1  # counted by the real Job controller
    assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)

    # deleted: the real garbage collector takes the Job and its pod with it
    custom = client.CustomObjectsApi(admin)
    await asyncio.to_thread(custom.delete_namespaced_custom_object, API_GROUP, API_VERSION, "backed-up", PLURAL, "shop")
    await gone(lambda: custom.get_namespaced_custom_object(API_GROUP, API_VERSION, "backed-up", PLURAL, "shop"))
    await gone(lambda: batch.read_namespaced_job(job.metadata.name, "backed-up"))
    await eventually(lambda: not core.list_namespaced_pod("backed-up").items)


async def eventually(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.5)


async def until(
    admin: client.ApiClient, name: str, done: Any, operator: RunningOperator, namespace: str = "shop",
    timeout: float = 120.0,
) -> dict[str, Any]:  # fmt: skip
    custom = client.CustomObjectsApi(admin)
    deadline = time.monotonic() + timeout
    resource: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resource = await asyncio.to_thread(
            custom.get_namespaced_custom_object, API_GROUP, API_VERSION, namespace, PLURAL, name
        )
        if done(resource):
            return resource
        assert operator.process.poll() is None, "the operator exited: " + operator.said()[-3000:]
        await asyncio.sleep(0.5)
    pytest.fail(f"the migration did not get there: {resource.get('status')}\n" + operator.said()[-5000:])


async def gone(read: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await asyncio.to_thread(read)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        await asyncio.sleep(0.5)
    pytest.fail("still there")
