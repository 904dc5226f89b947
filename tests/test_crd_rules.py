"""The CRD's CEL rule, evaluated by a CEL interpreter on the objects an API server would compare.

The objects are what the API server stores after defaulting: the models' full dump.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest

from vector_migration.api import VectorMigration
from vector_migration.kube.crd import crd_document


def stored(phase: str | None = None, swapped: bool = False, **spec: Any) -> dict[str, Any]:
    document = {
        "apiVersion": "ruvector.dev/v1alpha1",
        "kind": "VectorMigration",
        "metadata": {"name": "shop"},
        "spec": {"target": {"extension": "ruvector"}, "tables": [{"name": "public.items"}], **spec},
    }
    resource = VectorMigration.model_validate(document).model_dump(by_alias=True, mode="json", exclude_none=True)
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if swapped:
        status["conditions"] = [
            {"type": "ExtensionSwapped", "status": "True", "reason": "Completed", "lastTransitionTime": "x"}
        ]
    return {**resource, "status": status} if status else resource


def admitted(old: dict[str, Any], new: dict[str, Any]) -> bool:
    schema = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (rule,) = schema["x-kubernetes-validations"]
    environment = celpy.Environment()
    program = environment.program(environment.compile(rule["rule"]))
    return bool(program.evaluate({"self": celpy.json_to_cel(new), "oldSelf": celpy.json_to_cel(old)}))


@pytest.mark.parametrize("phase", [None, "Checklist", "Backup", "AwaitingApproval"])
def test_before_the_swap_the_whole_spec_may_change(phase: str | None) -> None:
    assert admitted(stored(phase), stored(phase, target={"extension": "ruvector", "version": "2.0.0"}))
    assert admitted(stored(phase), stored(phase, tables=[{"name": "public.other"}]))


@pytest.mark.parametrize("phase", ["Swap", "Reindex", "Verify", "Succeeded", "RollingBack", "RolledBack"])
def test_once_the_swap_started_what_the_migration_is_may_not_change(phase: str) -> None:
    assert not admitted(stored(phase), stored(phase, target={"extension": "ruvector", "version": "2.0.0"}))
    assert not admitted(stored(phase), stored(phase, tables=[{"name": "public.other"}]))
    assert not admitted(stored(phase), stored(phase, backup={"scope": "VectorTables"}))
    assert not admitted(stored(phase), stored(phase, reindex={"mode": "Concurrent"}))


def test_a_failed_migration_whose_swap_committed_is_frozen_too() -> None:
    assert not admitted(stored("Failed", swapped=True), stored("Failed", swapped=True, strategy="Rebuild"))
    assert admitted(stored("Failed"), stored("Failed", strategy="Rebuild"))


def test_people_still_steer_approval_rollback_and_post_migration_features() -> None:
    old = stored("Verify", approval="Manual")
    assert admitted(old, stored("Verify", approval="Automatic"))
    assert admitted(old, stored("Verify", approval="Manual", rollback={"onFailure": "Manual"}))
    assert admitted(old, stored("Verify", approval="Manual", postMigration={"registerCollections": True}))
    assert admitted(old, stored("Verify", approval="Manual", backup={"volume": {"emptyDir": {}}}))


def test_status_updates_with_the_same_spec_pass() -> None:
    assert admitted(stored("Swap"), stored("Reindex"))


def spec_rules_admit(spec: dict[str, Any]) -> list[str]:
    """The messages of the spec's own CEL rules that reject a (defaulted) spec."""
    schema = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    environment = celpy.Environment()
    rejected = []
    for rule in schema["x-kubernetes-validations"]:
        program = environment.program(environment.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(spec)}):
            rejected.append(rule["message"])
    return rejected


def test_rebuild_without_a_backup_is_rejected_by_the_api_server_and_by_the_models() -> None:
    defaulted = stored()["spec"]
    assert spec_rules_admit({**defaulted, "strategy": "Rebuild"}) == []
    rejected = spec_rules_admit(
        {**defaulted, "strategy": "Rebuild", "backup": {**defaulted["backup"], "enabled": False}}
    )
    assert rejected == ["strategy Rebuild requires backup.enabled: true"]
    assert spec_rules_admit({**defaulted, "backup": {**defaulted["backup"], "enabled": False}}) == []
    with pytest.raises(ValueError, match=r"strategy Rebuild requires backup\.enabled"):
        stored(strategy="Rebuild", backup={"enabled": False})


def test_rebuild_column_types_outside_a_rebuild_are_rejected_by_the_api_server_and_by_the_models() -> None:
    defaulted = stored()["spec"]
    half = {"columnTypes": [{"table": "public.notes", "column": "summary", "type": "ruvector"}]}
    assert spec_rules_admit({**defaulted, "strategy": "Rebuild", "rebuild": half}) == []
    assert spec_rules_admit({**defaulted, "strategy": "InPlace", "rebuild": half}) == [
        "rebuild.columnTypes requires strategy: Rebuild (columnTypes serves every strategy)"
    ]
    assert spec_rules_admit({**defaulted, "strategy": "Parallel", "rebuild": {"columnTypes": []}}) == []
    with pytest.raises(ValueError, match=r"rebuild\.columnTypes requires strategy: Rebuild"):
        stored(strategy="Parallel", rebuild=half)
    # columnTypes itself serves every strategy; the two spellings together are refused
    assert spec_rules_admit({**defaulted, "strategy": "Parallel", **half}) == []
    assert spec_rules_admit({**defaulted, "strategy": "Rebuild", "rebuild": half, **half}) == [
        "give columnTypes or rebuild.columnTypes (its older spelling), not both"
    ]
    with pytest.raises(ValueError, match=r"not both"):
        stored(strategy="Rebuild", rebuild=half, **half)


def replicate_rules_admit(replicate: dict[str, Any]) -> list[str]:
    """The messages of spec.replicate's own CEL rules that reject it."""
    schema = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    environment = celpy.Environment()
    rules = schema["properties"]["replicate"]["x-kubernetes-validations"]
    return [
        rule["message"]
        for rule in rules
        if not environment.program(environment.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(replicate)})
    ]


def test_drop_old_across_servers_is_rejected_by_the_api_server_and_by_the_models() -> None:
    defaulted = stored(strategy="Replicate")["spec"]["replicate"]
    target = {"target": {"secretRef": {"name": "other"}}}
    assert replicate_rules_admit({**defaulted, "dropOld": True}) == []
    assert replicate_rules_admit({**defaulted, **target}) == []
    assert replicate_rules_admit({**defaulted, **target, "dropOld": True}) == [
        "replicate.dropOld applies on the same server; with replicate.target, drop the old one yourself"
    ]
    with pytest.raises(ValueError, match=r"replicate\.dropOld applies on the same server"):
        stored(strategy="Replicate", replicate={**target, "dropOld": True})


def undescribed(node: dict[str, Any], path: str) -> list[str]:
    """Every property below ``node`` without a description, as a dotted path."""
    found = []
    for name, child in (node.get("properties") or {}).items():
        where = f"{path}.{name}"
        if not child.get("description"):
            found.append(where)
        found += undescribed(child, where)
        found += undescribed(child.get("items") or {}, f"{where}[]")
    return found


def test_every_spec_field_is_described_for_kubectl_explain() -> None:
    schema = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    assert undescribed(schema["properties"]["spec"], "spec") == []


def test_every_status_field_is_described_for_kubectl_explain() -> None:
    schema = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    assert undescribed(schema["properties"]["status"], "status") == []
