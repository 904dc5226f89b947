"""The chart's namespaced mode against the real RBAC authorizer: the operator works where it was granted, and
asked to work everywhere without the grant, it says so in one line and stops instead of retrying a 403.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
from kubernetes import client

from tests.cluster import phase
from tests.real_cluster.control_plane import ControlPlane
from tests.real_cluster.install import install_chart, service_account_kubeconfig
from tests.real_cluster.test_operator import SERVICE_ACCOUNT, SHOP, OperatorProcess, arrange, operator_arguments, until
from vector_migration.database.sql import ConnectionParams
from vector_migration.vocabulary import API_GROUP, API_VERSION, PLURAL

RELEASE_NAMESPACE = "vmig-team"


def namespaced_install(
    admin: client.ApiClient, control_plane: ControlPlane, directory: Path
) -> tuple[list[str], dict[str, str]]:
    """The chart with watchNamespaces [team-a]; the operator's arguments, and its environment with the chart's login."""
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": "team-a"}})
    objects = install_chart(admin, RELEASE_NAMESPACE, {"watchNamespaces": ["team-a"]})
    kubeconfig = service_account_kubeconfig(admin, control_plane, RELEASE_NAMESPACE, SERVICE_ACCOUNT, directory)
    args, environment = operator_arguments(objects)
    return args, {**os.environ, **environment, "KUBECONFIG": str(kubeconfig)}


async def test_a_namespaced_operator_migrates_in_its_namespace_and_asked_for_all_of_them_says_it_may_not(
    admin: client.ApiClient, control_plane: ControlPlane, database: ConnectionParams, conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:  # fmt: skip
    args, environment = namespaced_install(admin, control_plane, tmp_path)
    assert "--namespace=team-a" in args and "--all-namespaces" not in args
    operator = [str(Path(sys.executable).parent / "vector-migration"), *args]

    # an extraArgs mistake: every namespace, with the chart's grants in team-a only
    everywhere = [a for a in operator if not a.startswith("--namespace=")] + ["--all-namespaces"]
    refused = await asyncio.to_thread(
        subprocess.run, everywhere, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 1
    said = refused.stderr.strip().splitlines()[-1]
    assert said.startswith("error: RBAC does not let the operator list vectormigrations.ruvector.dev in every")

    # as the chart runs it: team-a's migration is done; team-b's is not its business
    await conn.execute(SHOP)
    arrange(admin, database, "team-b")
    with (tmp_path / "operator.log").open("w") as log:
        process = subprocess.Popen(operator, env=environment, stdout=log, stderr=subprocess.STDOUT,  # noqa: ASYNC220
                                   start_new_session=True)  # fmt: skip
    running = OperatorProcess(process, tmp_path / "operator.log")
    try:
        arrange(admin, database, "team-a", new_namespace=False)  # the chart's Role lives there already
        done = await until(
            admin, "shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), running, "team-a"
        )
        assert phase(done) == "Succeeded", done["status"].get("message")
        custom = client.CustomObjectsApi(admin)
        assert "status" not in custom.get_namespaced_custom_object(API_GROUP, API_VERSION, "team-b", PLURAL, "shop")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
    said = running.said()
    assert "forbidden" not in said.lower(), said[-3000:]  # a 403 says Forbidden
