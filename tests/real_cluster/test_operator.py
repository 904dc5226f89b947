"""The operator as the chart deploys it, against a real kube-apiserver: with the chart's RBAC and nothing more.

The chart is installed as `helm install` would (tests/real_cluster/install.py), with the image
`make image` built from the Dockerfile. The real Deployment and ReplicaSet controllers create the
operator's pod; the node stand-in (tests/real_cluster/node.py) runs it as a container of that image,
as the chart's security context says (user 10001, a read-only root, no capabilities), logged in with
the token of the chart's ServiceAccount. A request the chart does not grant is a 403 from the real
RBAC authorizer, which fails the test. The backup Jobs' pods run the same way, in a stand-in for
PostgreSQL's client image (tests/real_cluster/images.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.application import create_shop
from tests.chart import RELEASE
from tests.cluster import condition, phase
from tests.gitops import argo_health, kstatus
from tests.real_cluster.control_plane import ControlPlane, free_port
from tests.real_cluster.images import POSTGRES_CLIENT_STAND_IN, podman
from tests.real_cluster.install import install_chart
from tests.real_cluster.node import NodeStandIn
from tests.test_operator import secret_for
from tests.test_parallel import EMBEDDING_TYPE, docs_before
from vector_migration.database.sql import ConnectionParams
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
    """The operator's pod, created by the real Deployment and ReplicaSet controllers, run by the node stand-in."""

    node: NodeStandIn
    pod: str

    def said(self) -> str:
        return self.node.log_of(OPERATOR_NAMESPACE, self.pod)

    def alive(self) -> bool:
        return any(p.name == self.pod for p in self.node.running.values())


@dataclass
class OperatorProcess:
    """The operator as a process on this machine, with the chart's arguments (tests/real_cluster/test_namespaced.py)."""

    process: subprocess.Popen[bytes]
    log: Path

    def said(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture(scope="module")
def operator(admin: client.ApiClient, node: NodeStandIn, operator_image: str) -> Iterator[RunningOperator]:
    """The chart installed with the image `make image` built; its Deployment's pod, running as the chart says."""
    repository, tag = operator_image.rsplit(":", 1)
    install_chart(admin, OPERATOR_NAMESPACE, {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "jobs": {"imageRepository": POSTGRES_CLIENT_STAND_IN},
        "logging": {"level": "debug"},  # kopf says at debug level when it relists after a 410
    })  # fmt: skip
    core = client.CoreV1Api(admin)
    deadline = time.monotonic() + 120
    while not (pods := [p for p in core.list_namespaced_pod(OPERATOR_NAMESPACE).items if p.status.phase == "Running"]):
        assert time.monotonic() < deadline, f"the operator's pod never ran: {node.errors}"
        time.sleep(0.5)
    running = RunningOperator(node, pods[0].metadata.name)
    yield running
    apps = client.AppsV1Api(admin)
    apps.delete_namespaced_deployment(f"{RELEASE}-vector-migration-operator", OPERATOR_NAMESPACE)
    while running.alive():  # the real garbage collector deletes the pod; the node stand-in stops it
        assert time.monotonic() < deadline + 300, "the operator's pod was never stopped"
        time.sleep(0.5)
    said = running.said()
    assert node.errors == [], node.errors
    # the chart's RBAC sufficed: a 403 says Forbidden ("403" alone may be part of a number)
    assert "forbidden" not in said.lower(), said[-3000:]


def arrange(
    admin: client.ApiClient, database: ConnectionParams, namespace: str, new_namespace: bool = True, **spec: Any
) -> dict[str, str]:
    """A namespace with the database's Secret and a VectorMigration "shop" of it; the Secret's data."""
    core = client.CoreV1Api(admin)
    if new_namespace:
        core.create_namespace({"metadata": {"name": namespace}})
    data = {**secret_for(database), "port": str(database.port)}  # a server on the network, as pods see one
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


def test_the_operators_pod_runs_in_its_image_as_the_chart_says(operator: RunningOperator, node: NodeStandIn) -> None:
    # the securityContext the chart asks for: tests/real_cluster/test_image.py
    (running,) = [p for p in node.running.values() if (p.namespace, p.name) == (OPERATOR_NAMESPACE, operator.pod)]
    (inspected,) = json.loads(podman("inspect", running.container).stdout)

    assert inspected["Config"]["User"] == "10001:10001"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["EffectiveCaps"] in (None, [])
    assert "no-new-privileges" in inspected["HostConfig"]["SecurityOpt"]
    assert inspected["ImageName"] == running.image


async def test_status_writes_that_meet_a_newer_version_are_written_again_and_none_is_lost(
    admin: client.ApiClient, operator: RunningOperator, database: ConnectionParams, conn: asyncpg.Connection,
) -> None:  # fmt: skip
    await conn.execute(SHOP)
    arrange(admin, database, "touched")
    custom = client.CustomObjectsApi(admin)
    touches = 0

    async def someone_else_keeps_changing_it() -> None:  # each change is a new resourceVersion
        nonlocal touches
        while True:
            touches += 1
            body = {"metadata": {"annotations": {"example.com/touched": str(touches)}}}
            await asyncio.to_thread(custom.patch_namespaced_custom_object, API_GROUP, API_VERSION, "touched",
                                    PLURAL, "shop", body)  # fmt: skip
            await asyncio.sleep(0.05)

    toucher = asyncio.create_task(someone_else_keeps_changing_it())
    try:
        done = await until(admin, "shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), operator,
                           "touched")  # fmt: skip
    finally:
        toucher.cancel()

    assert phase(done) == "Succeeded", done["status"].get("message")
    assert "(409 Conflict); writing again on" in operator.said()  # the writer met a newer version, and wrote again
    status = done["status"]
    assert condition(done, "Ready")["status"] == "True" and status["planHash"] and status["verification"]["tables"]
    assert status["observedGeneration"] == done["metadata"]["generation"]


async def test_an_approval_given_after_the_api_server_restarted_without_history_is_seen_and_the_swap_runs_once(
    admin: client.ApiClient, control_plane: ControlPlane, operator: RunningOperator,
    database: ConnectionParams, conn: asyncpg.Connection,
) -> None:  # fmt: skip
    await conn.execute(SHOP)
    arrange(admin, database, "held", approval="Manual")
    waiting = await until(admin, "shop", lambda r: phase(r) == "AwaitingApproval", operator, "held")

    # the operator's watches break, and come back to a server whose etcd compacted the revisions they
    # were at: each is answered 410 Gone, and kopf must list again
    await asyncio.to_thread(control_plane.restart_apiserver, forget_history=True)
    # approved as a person would, through real kubectl's plugin discovery
    approved = await asyncio.to_thread(control_plane.kubectl, "vmig", "approve", "shop", "-n", "held", "--yes")
    assert approved.returncode == 0, approved.stderr
    assert waiting["status"]["planHash"] in approved.stdout
    done = await until(admin, "shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), operator, "held")

    assert phase(done) == "Succeeded", done["status"].get("message")
    assert "Restarting the watch-stream for vectormigrations" in operator.said()  # the 410, relisted
    swaps = [e for e in client.CoreV1Api(admin).list_namespaced_event("held").items if e.reason == "Swap"]
    assert sum(e.count or 1 for e in swaps) == 1


async def test_the_backup_job_runs_through_the_real_job_controller_and_goes_with_the_migration(
    admin: client.ApiClient, operator: RunningOperator,
    database: ConnectionParams, conn: asyncpg.Connection, node: NodeStandIn,
) -> None:  # fmt: skip
    await conn.execute(SHOP)
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
    assert (
        any(ran.startswith("backed-up/") for ran in node.ran) and job.status.succeeded == 1
    )  # counted by the real Job controller
    assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)

    # deleted: the real garbage collector takes the Job and its pod with it
    custom = client.CustomObjectsApi(admin)
    await asyncio.to_thread(custom.delete_namespaced_custom_object, API_GROUP, API_VERSION, "backed-up", PLURAL, "shop")
    await gone(lambda: custom.get_namespaced_custom_object(API_GROUP, API_VERSION, "backed-up", PLURAL, "shop"))
    await gone(lambda: batch.read_namespaced_job(job.metadata.name, "backed-up"))
    await eventually(lambda: not core.list_namespaced_pod("backed-up").items)


async def paused_cutover(
    admin: client.ApiClient, operator: RunningOperator, database: ConnectionParams, conn: asyncpg.Connection,
    namespace: str,
) -> dict[str, Any]:  # fmt: skip
    """A Parallel migration paused in its cutover at 50%, as its routing ConfigMap says; the resource then."""
    await create_shop(conn)
    arrange(admin, database, namespace, strategy="Parallel", parallel={"keepOldFor": "0s"},
            cutover={"steps": [{"setWeight": 50}, {"pause": {}}]})  # fmt: skip
    paused = await until(
        admin, "shop", lambda r: (condition(r, "Reconciling").get("reason") == "AwaitingPromotion"
                                  or phase(r) in ("Failed", "RolledBack")), operator, namespace,
    )  # fmt: skip
    assert phase(paused) == "Cutover", paused["status"].get("message")
    assert routing(admin, namespace)["weight"] == "50"
    return paused


def routing(admin: client.ApiClient, namespace: str) -> dict[str, str]:
    return dict(client.CoreV1Api(admin).read_namespaced_config_map("shop-cutover", namespace).data)


async def test_a_paused_cutover_goes_on_when_promoted_through_real_kubectl(
    admin: client.ApiClient, control_plane: ControlPlane, operator: RunningOperator,
    database: ConnectionParams, conn: asyncpg.Connection,
) -> None:  # fmt: skip
    await paused_cutover(admin, operator, database, conn, "promoted")
    before = await docs_before(conn)

    promoted = await asyncio.to_thread(control_plane.kubectl, "vmig", "promote", "shop", "-n", "promoted", "--yes")
    assert promoted.returncode == 0, promoted.stderr

    def used(r: dict[str, Any]) -> bool:  # the phase ends, then the consumed annotation is removed
        annotations = r["metadata"].get("annotations") or {}
        return phase(r) in ("Succeeded", "Failed", "RolledBack") and "ruvector.dev/promote" not in annotations

    done = await until(admin, "shop", used, operator, "promoted")

    assert phase(done) == "Succeeded", done["status"].get("message")
    assert routing(admin, "promoted")["weight"] == "100"
    assert await docs_before(conn) == before
    assert await conn.fetchval(EMBEDDING_TYPE) == "ruvector(8)"


async def test_a_rollback_during_the_cutover_routes_every_read_back_to_the_old_tables(
    admin: client.ApiClient, control_plane: ControlPlane, operator: RunningOperator,
    database: ConnectionParams, conn: asyncpg.Connection,
) -> None:  # fmt: skip
    await paused_cutover(admin, operator, database, conn, "turned-back")
    before = await docs_before(conn)

    asked = await asyncio.to_thread(control_plane.kubectl, "vmig", "rollback", "shop", "-n", "turned-back", "--yes")
    assert asked.returncode == 0, asked.stderr
    done = await until(admin, "shop", lambda r: phase(r) in ("RolledBack", "Failed", "Succeeded"), operator,
                       "turned-back")  # fmt: skip

    assert phase(done) == "RolledBack", done["status"].get("message")
    # what applications read: no share of reads may go to shadow tables that are gone
    assert routing(admin, "turned-back")["weight"] == "0", routing(admin, "turned-back")
    assert "cutover" not in done["status"], done["status"].get("cutover")  # cleared on the server too
    assert await docs_before(conn) == before
    assert await conn.fetchval(EMBEDDING_TYPE) == "vector(8)"


async def eventually(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.5)


async def until(
    admin: client.ApiClient, name: str, done: Any, operator: RunningOperator | OperatorProcess, namespace: str = "shop",
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
        assert operator.alive(), "the operator exited: " + operator.said()[-3000:]
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
