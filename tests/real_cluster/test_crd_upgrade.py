"""Upgrading the CRD from a previous release's on a real API server: what users made under it stays.

`tests/fixtures/releases/<version>/` holds each release's CRD and examples as it shipped them. The
CRDs are moved to a group of each test's own, so the session's CRD (and what other modules made
with it) is not touched; the group is not part of the schema under test.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.real_cluster.test_crd import chart_crd, established, eventually, refusal
from vector_migration.api import VectorMigration
from vector_migration.vocabulary import API_GROUP, API_VERSION, PLURAL

RELEASES = Path(__file__).resolve().parents[1] / "fixtures" / "releases"
# A release whose CRD no real API server installs: no cluster holds its objects, so there is nothing
# to upgrade; its manifests must still apply under the current CRD. The server's words, in part.
NEVER_INSTALLED = {"0.1.0": "additionalProperties and properties are mutual exclusive"}
# what an operator of those releases wrote to a migration it finished (fields every release has)
FINISHED = {
    "phase": "Succeeded", "observedGeneration": 1, "planHash": "sha256:" + "ab" * 32, "message": "migrated",
    "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "migrated",
                    "lastTransitionTime": "2026-11-24T10:00:00Z"}],
}  # fmt: skip
VERSIONS = sorted(p.name for p in RELEASES.iterdir() if p.is_dir())


def in_group(crd: dict[str, Any], group: str) -> dict[str, Any]:
    moved = copy.deepcopy(crd)
    moved["metadata"] = {"name": f"{PLURAL}.{group}"}
    moved["spec"]["group"] = group
    return moved


def examples_of(version: str, group: str, namespace: str) -> list[dict[str, Any]]:
    examples = []
    for path in sorted((RELEASES / version / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "VectorMigration":
                document["apiVersion"] = f"{group}/{API_VERSION}"
                document["metadata"] = {**document["metadata"], "namespace": namespace, "name": path.stem}  # unique
                examples.append(document)
    return examples


@pytest.mark.parametrize("version", VERSIONS)
def test_what_a_previous_release_made_is_kept_valid_and_readable_after_the_upgrade(
    admin: client.ApiClient, version: str
) -> None:
    group, namespace = f"v{version.replace('.', '-')}.{API_GROUP}", f"crd-from-{version.replace('.', '-')}"
    extensions, custom = client.ApiextensionsV1Api(admin), client.CustomObjectsApi(admin)
    previous = in_group(yaml.safe_load((RELEASES / version / "vectormigration.crd.yaml").read_text()), group)
    if version in NEVER_INSTALLED:
        assert NEVER_INSTALLED[version] in refusal(lambda: extensions.create_custom_resource_definition(previous))
        previous = in_group(chart_crd(), group)  # its users' manifests meet the current CRD directly
    extensions.create_custom_resource_definition(previous)
    eventually(lambda: established(extensions, previous["metadata"]["name"]))
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    made = []
    for example in examples_of(version, group, namespace):  # applied by its users, finished by its operator
        custom.create_namespaced_custom_object(group, API_VERSION, namespace, PLURAL, example)
        name = example["metadata"]["name"]
        custom.patch_namespaced_custom_object_status(group, API_VERSION, namespace, PLURAL, name, {"status": FINISHED})
        made.append((name, example["spec"]))

    # the upgrade, as `kubectl apply -f crds/` makes it: the same object with the new schema
    current = in_group(chart_crd(), group)
    stored = extensions.read_custom_resource_definition(current["metadata"]["name"])
    current["metadata"]["resourceVersion"] = stored.metadata.resource_version
    extensions.replace_custom_resource_definition(current["metadata"]["name"], current)
    eventually(lambda: established(extensions, current["metadata"]["name"]))

    assert made, f"release {version} has no VectorMigration examples"
    for name, spec in made:
        kept = _read(custom, group, namespace, name)
        assert kept["status"]["phase"] == "Succeeded", kept.get("status")
        assert _within(spec, kept["spec"]), f"{name}: the new schema pruned what its user wrote"
        VectorMigration.model_validate({**{k: kept[k] for k in ("kind", "metadata", "spec")},
                                        "apiVersion": f"{API_GROUP}/{API_VERSION}"})  # fmt: skip
        # the new schema accepts the old spec whole, not only where it is unchanged (CRD ratcheting)
        again = {**copy.deepcopy(kept), "metadata": {"name": f"{name}-again", "namespace": namespace}}
        again.pop("status")
        custom.create_namespaced_custom_object(group, API_VERSION, namespace, PLURAL, again, dry_run="All")
        # and a person can still annotate it, as `kubectl vmig approve` does
        annotation = {"metadata": {"annotations": {"ruvector.dev/paused": "false"}}}
        custom.patch_namespaced_custom_object(group, API_VERSION, namespace, PLURAL, name, annotation)
    extensions.delete_custom_resource_definition(current["metadata"]["name"])


def _within(written: Any, stored: Any) -> bool:
    """Every field written is stored with its value (the server may add defaults, never drop a field)."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(k in stored and _within(v, stored[k]) for k, v in written.items())
    return bool(written == stored)


def _read(custom: client.CustomObjectsApi, group: str, namespace: str, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:  # the new schema is served once the API server has rebuilt its handler
        try:
            return dict(custom.get_namespaced_custom_object(group, API_VERSION, namespace, PLURAL, name))
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
