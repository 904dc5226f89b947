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
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from kubernetes import client

from tests.cluster import condition, phase
from tests.gitops import argo_health, kstatus
from tests.real_cluster.control_plane import ControlPlane, free_port
from tests.real_cluster.install import install_chart, service_account_kubeconfig
from tests.test_operator import secret_for
from vector_migration.database.sql import ConnectionParams
from vector_migration.vocabulary import API_GROUP, API_VERSION, PLURAL

OPERATOR_NAMESPACE = "vmig-system"
SERVICE_ACCOUNT = "vmo-vector-migration-operator"
NAMESPACE = "shop"


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


async def test_the_operator_with_only_the_charts_rbac_migrates_a_database(
    admin: client.ApiClient,
    control_plane: ControlPlane,
    database: ConnectionParams,
    conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    await conn.execute(
        "CREATE EXTENSION vector; CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));"
        " INSERT INTO items SELECT i, ARRAY[i, i + 1, i + 2]::real[]::vector FROM generate_series(1, 200) i;"
    )
    objects = install_chart(admin, OPERATOR_NAMESPACE)
    kubeconfig = service_account_kubeconfig(admin, control_plane, OPERATOR_NAMESPACE, SERVICE_ACCOUNT, tmp_path)
    core, custom = client.CoreV1Api(admin), client.CustomObjectsApi(admin)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    data = secret_for(database)
    core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "shop-app"}, "stringData": data})

    args, environment = operator_arguments(objects)
    with (tmp_path / "operator.log").open("w") as log:
        operator = subprocess.Popen(  # noqa: ASYNC220 - it runs beside the test, which polls it
            [str(Path(sys.executable).parent / "vector-migration"), *args],
            env={**os.environ, **environment, "KUBECONFIG": str(kubeconfig)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        custom.create_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, {
            "apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "VectorMigration",
            "metadata": {"name": "shop", "namespace": NAMESPACE},
            "spec": {"database": {"secretRef": {"name": "shop-app"}}, "target": {"extension": "ruvector_standin"},
                     "backup": {"enabled": False}, "verify": {"sampleQueries": 10, "k": 5, "latencySlackMs": 50}},
        })  # fmt: skip
        done = await until(custom, lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), operator, tmp_path)
    finally:
        os.killpg(operator.pid, signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(operator.pid, signal.SIGKILL)
            operator.wait()
    said = (tmp_path / "operator.log").read_text()

    assert phase(done) == "Succeeded", done["status"].get("message")
    assert condition(done, "Ready")["status"] == "True"
    assert "403" not in said and "forbidden" not in said.lower(), said[-3000:]
    assert data["password"] not in said
    column = await conn.fetchval("SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                                 " WHERE attrelid = 'items'::regclass AND attname = 'embedding'")  # fmt: skip
    assert column.startswith("ruvector")
    events = core.list_namespaced_event(NAMESPACE).items
    assert {e.reason for e in events} >= {"Checklist", "Swap", "Succeeded"}
    report = core.read_namespaced_config_map("shop-report", NAMESPACE)
    assert report.metadata.owner_references[0].kind == "VectorMigration"
    # what a person and GitOps see, from the status the real server stored
    assert (argo_health(done)[0], kstatus(done)) == ("Healthy", "Current")
    waited = await asyncio.to_thread(
        kubectl, control_plane, "wait", "--for=condition=Ready", "vmig/shop", "-n", NAMESPACE
    )
    assert waited.returncode == 0, waited.stderr
    # real kubectl finds the plugin on PATH, as a user's does
    status = await asyncio.to_thread(kubectl, control_plane, "vmig", "status", "shop", "-n", NAMESPACE)
    assert status.returncode == 0 and "Succeeded" in status.stdout, status.stderr


def kubectl(control_plane: ControlPlane, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real kubectl, as the admin, with this environment's kubectl-vmig on PATH."""
    # KUBECONFIG, not --kubeconfig: kubectl refuses flags before a plugin's name
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   "KUBECONFIG": str(control_plane.root / "admin.kubeconfig")}  # fmt: skip
    return subprocess.run([str(control_plane.bin_dir / "kubectl"), *argv], capture_output=True, text=True,
                          env=environment, timeout=60, check=False)  # fmt: skip


async def until(
    custom: client.CustomObjectsApi, done: Any, operator: subprocess.Popen[bytes], logs: Path, timeout: float = 120.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resource: dict[str, Any] = await asyncio.to_thread(
            custom.get_namespaced_custom_object, API_GROUP, API_VERSION, NAMESPACE, PLURAL, "shop"
        )
        if done(resource):
            return resource
        assert operator.poll() is None, "the operator exited: " + (logs / "operator.log").read_text()[-3000:]
        await asyncio.sleep(0.5)
    pytest.fail(
        f"the migration did not finish: {resource.get('status')}\n" + (logs / "operator.log").read_text()[-5000:]
    )
