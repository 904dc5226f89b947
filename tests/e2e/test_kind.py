"""A user's day on a real cluster: install the chart, apply a VectorMigration, wait for Ready, check the data.

kind runs the cluster; the operator image is built from this repository's Dockerfile and loaded
into it; the chart is rendered by Helm (helm-python-sdk) and applied with kubectl. The database
is PostgreSQL with pgvector plus the RuVector stand-in extensions, or, with RUVECTOR_IMAGE set,
an image that has real RuVector (then RUVECTOR_EXTENSION names its extension, default ruvector).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart import CHART, ROOT, render
from vector_migration.demo import standin

CLUSTER = os.environ.get("E2E_CLUSTER", "vmig-e2e")
OPERATOR_IMAGE = "vector-migration-operator:e2e"
DATABASE_IMAGE = os.environ.get("RUVECTOR_IMAGE", "vmig-e2e-database:standin")
TARGET = os.environ.get("RUVECTOR_EXTENSION", "ruvector" if "RUVECTOR_IMAGE" in os.environ else "ruvector_standin")
SYSTEM, APP = "vmig-system", "shop"
PASSWORD = "e2e-Pa55-not-a-secret-anywhere"
ROWS = 2000


def sh(*command: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def kubectl(*args: str, stdin: str | None = None) -> str:
    return sh("kubectl", "--context", f"kind-{CLUSTER}", *args, stdin=stdin)


def apply(objects: list[dict[str, Any]]) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(objects))


def psql(sql: str) -> str:
    return kubectl(
        "-n", APP, "exec", "shop-db-0", "--", "psql", "-U", "postgres", "-d", "shop", "-tA", "-v", "ON_ERROR_STOP=1",
        "-c", sql,
    ).strip()  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    created = CLUSTER not in sh("kind", "get", "clusters").split()
    if created:
        sh("kind", "create", "cluster", "--name", CLUSTER, "--wait", "180s")
    try:
        sh("docker", "build", "-t", OPERATOR_IMAGE, str(ROOT))
        sh("kind", "load", "docker-image", OPERATOR_IMAGE, "--name", CLUSTER)
        if "RUVECTOR_IMAGE" not in os.environ:
            with tempfile.TemporaryDirectory() as context:
                (Path(context) / "standin").mkdir()
                standin.install(Path(context) / "standin")
                dockerfile = ROOT / "tests" / "e2e" / "database.Dockerfile"
                sh("docker", "build", "-t", DATABASE_IMAGE, "-f", str(dockerfile), context)
        sh("kind", "load", "docker-image", DATABASE_IMAGE, "--name", CLUSTER)
        yield
    finally:
        if created and not os.environ.get("E2E_KEEP_CLUSTER"):
            sh("kind", "delete", "cluster", "--name", CLUSTER, check=False)


@pytest.fixture(scope="module")
def operator(cluster: None) -> None:
    # kopf's peering CRDs from crds/, ours from the chart's templates (crds.create): the API server's
    # own CRD validation is the first thing this suite meets, and it refuses a CRD it cannot accept.
    crds = [doc for path in sorted((CHART / "crds").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]
    values = {"image": {"repository": OPERATOR_IMAGE.split(":")[0], "tag": "e2e", "pullPolicy": "Never"}}
    rendered = render(values, namespace=SYSTEM)
    crds += [o for o in rendered if o["kind"] == "CustomResourceDefinition"]
    apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in (SYSTEM, APP)])
    apply(crds)
    kubectl("wait", "--for=condition=Established", "crd/vectormigrations.ruvector.dev", "--timeout=60s")
    apply([o for o in rendered if o["kind"] != "CustomResourceDefinition"])
    kubectl("-n", SYSTEM, "rollout", "status", "deployment/vmo-vector-migration-operator", "--timeout=180s")


@pytest.fixture(scope="module")
def database(cluster: None) -> dict[str, str]:
    apply([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-db", "namespace": APP},
         "stringData": {"password": PASSWORD}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop-db", "namespace": APP},
         "spec": {"selector": {"app": "shop-db"}, "ports": [{"port": 5432}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "shop-db", "namespace": APP},
         "spec": {"serviceName": "shop-db", "replicas": 1, "selector": {"matchLabels": {"app": "shop-db"}},
                  "template": {"metadata": {"labels": {"app": "shop-db"}}, "spec": {"containers": [{
                      "name": "postgres", "image": DATABASE_IMAGE, "imagePullPolicy": "Never",
                      "env": [{"name": "POSTGRES_DB", "value": "shop"},
                              {"name": "POSTGRES_PASSWORD",
                               "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}}],
                      "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "postgres", "-d", "shop"]}},
                      "ports": [{"containerPort": 5432}]}]}}}},
        # the application's credentials, in CloudNativePG's app-secret layout
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-app", "namespace": APP},
         "stringData": {"host": f"shop-db.{APP}.svc", "port": "5432", "dbname": "shop", "username": "postgres",
                        "password": PASSWORD}},
    ])  # fmt: skip
    kubectl("-n", APP, "rollout", "status", "statefulset/shop-db", "--timeout=180s")
    psql("CREATE EXTENSION IF NOT EXISTS vector")
    psql(
        "CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY, embedding vector(8));"
        # the subquery refers to g so that every row gets its own random vector
        "INSERT INTO items SELECT g, (SELECT array_agg(random())::real[]::vector(8) FROM generate_series(1, 8 + g * 0))"
        f" FROM generate_series(1, {ROWS}) g ON CONFLICT DO NOTHING;"
        "CREATE INDEX IF NOT EXISTS items_l2 ON items USING hnsw (embedding vector_l2_ops);"
    )
    return {"rows": psql("SELECT count(*) FROM items"), "checksum": content_checksum()}


def content_checksum() -> str:
    return psql("SELECT md5(string_agg(embedding::text, ',' ORDER BY id)) FROM items")


def test_a_migration_applied_with_kubectl_becomes_ready_and_keeps_every_row(
    operator: None, database: dict[str, str]
) -> None:
    apply([{
        "apiVersion": "ruvector.dev/v1alpha1", "kind": "VectorMigration",
        "metadata": {"name": "shop", "namespace": APP},
        "spec": {"database": {"secretRef": {"name": "shop-app"}}, "target": {"extension": TARGET},
                 "verify": {"sampleQueries": 20, "k": 5}},
    }])  # fmt: skip
    started = time.monotonic()
    waited = subprocess.run(
        ["kubectl", "--context", f"kind-{CLUSTER}", "-n", APP, "wait", "--for=condition=Ready",
         "vectormigration/shop", "--timeout=900s"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    resource = json.loads(kubectl("-n", APP, "get", "vmig", "shop", "-o", "json"))
    assert waited.returncode == 0, json.dumps(resource.get("status"), indent=2)[-4000:]
    print(f"Ready after {time.monotonic() - started:.0f}s")

    status = resource["status"]
    assert status["phase"] == "Succeeded"
    assert status["backup"]["verified"] is True
    assert all(t["rowsBefore"] == t["rowsAfter"] for t in status["verification"]["tables"])
    assert psql("SELECT count(*) FROM items") == database["rows"]
    assert content_checksum() == database["checksum"]
    extensions = psql("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension").split(",")
    assert TARGET in extensions and "vector" not in extensions
    stalled = "jsonpath={.status.conditions[?(@.type=='Stalled')].status}"
    assert kubectl("-n", APP, "get", "vmig", "shop", "-o", stalled) == "False"
    jobs = json.loads(kubectl("-n", APP, "get", "jobs", "-l", "ruvector.dev/migration=shop", "-o", "json"))
    assert [j["status"].get("succeeded") for j in jobs["items"]] == [1]
