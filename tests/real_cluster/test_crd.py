"""The CRD through a real kube-apiserver: what the emulator and the ported rules could only stand in for.

The chart's CRD is installed as Helm renders it; then the server's own structural-schema checks,
CEL, defaulting, pruning, the status subresource and the printer columns are held against what the
models and tests/crd_conformance.py say. Where they disagree, the real server is right: each
difference found is written beside the test that found it.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.chart import of_kind, render
from tests.real_cluster.control_plane import ControlPlane
from tests.test_crd_conformance import DEFECTS
from vector_migration.api import VectorMigration
from vector_migration.vocabulary import API_GROUP, API_VERSION, PLURAL

NAMESPACE = "crd-checks"


def chart_crd() -> dict[str, Any]:
    (crd,) = of_kind(render(), "CustomResourceDefinition")
    return crd


@pytest.fixture(scope="module")
def installed(admin: client.ApiClient) -> client.CustomObjectsApi:
    """The chart's CRD, created and Established, and a namespace for the resources."""
    extensions = client.ApiextensionsV1Api(admin)
    crd = chart_crd()
    try:
        extensions.create_custom_resource_definition(crd)
    except ApiException as error:
        if error.status != 409:  # an earlier module of this session installed it
            raise
    eventually(lambda: established(extensions, crd["metadata"]["name"]))
    core = client.CoreV1Api(admin)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as error:
        if error.status != 409:
            raise
    return client.CustomObjectsApi(admin)


def established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    status = extensions.read_custom_resource_definition(name).status
    return any(c.type == "Established" and c.status == "True" for c in status.conditions or [])


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def migration(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "VectorMigration",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"database": {"secretRef": {"name": "shop-app"}}, "target": {"extension": "ruvector"}, **spec},
    }


def create(api: client.CustomObjectsApi, body: dict[str, Any], **options: Any) -> dict[str, Any]:
    created: dict[str, Any] = api.create_namespaced_custom_object(
        API_GROUP, API_VERSION, NAMESPACE, PLURAL, body, **options
    )
    return created


def refusal(call: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 422, refused.value.body
    return str(json.loads(refused.value.body)["message"])


def test_the_charts_crd_is_established_with_its_names(
    installed: client.CustomObjectsApi, admin: client.ApiClient
) -> None:
    crd = client.ApiextensionsV1Api(admin).read_custom_resource_definition(chart_crd()["metadata"]["name"])
    assert crd.status.accepted_names.short_names == ["vmig"]
    assert crd.status.accepted_names.categories == ["all", "vectormigrations"]


@pytest.mark.parametrize(("defect", "message"), DEFECTS, ids=[d.__name__.strip("_") for d, _ in DEFECTS])
def test_the_real_server_refuses_each_defect_the_ported_rules_catch(
    installed: client.CustomObjectsApi, admin: client.ApiClient, defect: Callable[[dict[str, Any]], None], message: str
) -> None:
    crd = copy.deepcopy(chart_crd())
    defect(crd)
    group = f"defect-{defect.__name__.strip('_').replace('_', '-')}.example.com"
    crd["spec"]["group"] = group
    crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{group}"
    refused = refusal(lambda: client.ApiextensionsV1Api(admin).create_custom_resource_definition(crd, dry_run="All"))
    assert message in refused, refused


def test_defaults_are_the_models_defaults(installed: client.CustomObjectsApi) -> None:
    stored = create(installed, migration("defaults"))
    models = VectorMigration.model_validate(migration("defaults")).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    # the server does not default empty lists and maps (the models' default_factory ones): the same spec
    assert without_empty(stored["spec"]) == without_empty(models["spec"])


def without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {key: without_empty(child) for key, child in value.items()}
        return {key: child for key, child in kept.items() if child not in ({}, [])}
    return value


def test_an_unknown_field_is_pruned_or_with_strict_validation_refused(installed: client.CustomObjectsApi) -> None:
    stored = create(installed, migration("pruned", colour="blue"))
    assert "colour" not in stored["spec"]
    with pytest.raises(ApiException) as refused:  # 400, not 422: the strict decoder refuses it
        create(installed, migration("strict", colour="blue"), field_validation="Strict")
    assert refused.value.status == 400 and 'unknown field \\"spec.colour\\"' in refused.value.body


def test_the_cel_rules_refuse_what_the_models_refuse(installed: client.CustomObjectsApi) -> None:
    refused = refusal(lambda: create(installed, migration("rebuild", strategy="Rebuild", backup={"enabled": False})))
    assert "strategy Rebuild requires backup.enabled: true" in refused
    columns = {"columnTypes": [{"table": "public.notes", "column": "summary", "type": "ruvector"}]}
    refused = refusal(lambda: create(installed, migration("columns", strategy="InPlace", rebuild=columns)))
    assert "rebuild.columnTypes requires strategy: Rebuild" in refused
    across = {"target": {"secretRef": {"name": "other"}}, "dropOld": True}
    refused = refusal(lambda: create(installed, migration("across", strategy="Replicate", replicate=across)))
    assert "replicate.dropOld applies on the same server" in refused
    refused = refusal(lambda: create(installed, migration("bare", parallel={"keepOldFor": "600"})))
    assert "spec.parallel.keepOldFor" in refused


def test_status_is_written_only_through_its_subresource_and_freezes_the_spec_after_the_swap(
    installed: client.CustomObjectsApi,
) -> None:
    create(installed, migration("frozen"))
    swapped = {"type": "ExtensionSwapped", "status": "True", "reason": "Completed", "message": "",
               "lastTransitionTime": "2026-12-07T10:00:00Z"}  # fmt: skip
    status = {"phase": "Swap", "conditions": [swapped]}
    # through the main resource, status is ignored (the status subresource owns it)
    installed.patch_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, "frozen", {"status": status})
    assert "status" not in installed.get_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, "frozen")
    installed.patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, NAMESPACE, PLURAL, "frozen", {"status": status}
    )
    stored = installed.get_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, "frozen")
    assert stored["status"]["phase"] == "Swap" and stored["metadata"]["generation"] == 1

    change = {"spec": {"target": {"extension": "ruvector", "version": "2.0.0"}}}
    refused = refusal(
        lambda: installed.patch_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, "frozen", change)
    )
    assert "once the swap has started" in refused
    steer = {"spec": {"approval": "Manual"}}  # people still steer
    after = installed.patch_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, "frozen", steer)
    assert after["metadata"]["generation"] == 2


def test_a_stale_resource_version_is_a_conflict(installed: client.CustomObjectsApi) -> None:
    stored = create(installed, migration("stale"))
    installed.patch_namespaced_custom_object(
        API_GROUP, API_VERSION, NAMESPACE, PLURAL, "stale", {"spec": {"dryRun": True}}
    )
    with pytest.raises(ApiException) as conflict:
        installed.replace_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, "stale", stored)
    assert conflict.value.status == 409


def kubectl(control_plane: ControlPlane, *argv: str) -> str:
    """What the real kubectl printed; it must have succeeded."""
    done = control_plane.kubectl(*argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kubectl_explains_every_field_and_lists_the_columns(
    installed: client.CustomObjectsApi, control_plane: ControlPlane
) -> None:
    explained = kubectl(control_plane, "explain", "vectormigration.spec.lockTimeout")
    assert "DESCRIPTION:" in explained and "lock" in explained.split("DESCRIPTION:", 1)[1].lower()
    create(installed, migration("listed"))
    listed = kubectl(control_plane, "get", "vmig", "-n", NAMESPACE, "-o", "wide")
    header = listed.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "READY", "REASON", "MESSAGE", "AGE", "STRATEGY", "TARGET", "PLAN"]


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
@pytest.mark.parametrize("how", [["--server-side"], []], ids=["server-side", "client-side"])
def test_kubectl_applies_every_example(
    installed: client.CustomObjectsApi, admin: client.ApiClient, control_plane: ControlPlane,
    example: Path, how: list[str],
) -> None:  # fmt: skip
    try:
        client.CoreV1Api(admin).create_namespace({"metadata": {"name": "shop"}})  # operator-shop.yaml's
    except ApiException as error:
        if error.status != 409:
            raise
    said = kubectl(control_plane, "apply", *how, "--dry-run=server", "-f", str(example))
    assert "created (server dry run)" in said or "serverside-applied (server dry run)" in said
