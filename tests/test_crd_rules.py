"""The CRD's CEL rule, evaluated by a CEL interpreter on the objects an API server would compare.

The objects are what the API server stores after defaulting: the models' full dump.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest

from vector_migration.api import (
    REBUILD_NEEDS_BACKUP,
    REPLICATE_RULES,
    SPEC_RULES,
    VectorMigration,
    VectorMigrationSpec,
)
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
    assert rejected == [REBUILD_NEEDS_BACKUP]
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


# Every value each rule reads, absent or present: their every combination is a spec to judge.
CHOICES: dict[str, list[Any]] = {
    "strategy": [None, "InPlace", "Rebuild", "Parallel", "Replicate"],
    "backup": [None, {"enabled": True}, {"enabled": False}],
    "rebuild": [None, {"columnTypes": []}, {"columnTypes": [{"table": "t", "column": "c", "type": "ruvector"}]}],
    "columnTypes": [None, [{"table": "u", "column": "c", "type": "ruvector"}]],
    "replicate": [None, {"target": {"secretRef": {"name": "other"}}}, {"dropOld": True},
                  {"target": {"secretRef": {"name": "other"}}, "dropOld": True}],
    "inPlace": [None, {"tablesPerBatch": 5}],
}  # fmt: skip


def every_combination() -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = [{}]
    for field, values in CHOICES.items():
        specs = [{**spec, **({field: value} if value is not None else {})} for spec in specs for value in values]
    return specs


def test_each_rule_across_fields_is_one_rule_for_the_api_server_and_the_models() -> None:
    # The CRD's CEL, its Python check, and the models refuse exactly the same specs, with the same message.
    environment = celpy.Environment()
    spec_schema = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    compiled = [environment.program(environment.compile(r["rule"])) for r in spec_schema["x-kubernetes-validations"]]
    replicate_rules = spec_schema["properties"]["replicate"]["x-kubernetes-validations"]
    replicate_compiled = [environment.program(environment.compile(r["rule"])) for r in replicate_rules]
    assert [r["message"] for r in spec_schema["x-kubernetes-validations"]] == [r.message for r in SPEC_RULES]
    assert [r["message"] for r in replicate_rules] == [r.message for r in REPLICATE_RULES]
    judged = 0
    for spec in every_combination():
        by_cel = [rule.message for rule, program in zip(SPEC_RULES, compiled, strict=True)
                  if not program.evaluate({"self": celpy.json_to_cel(spec)})]  # fmt: skip
        by_check = [rule.message for rule in SPEC_RULES if rule.broken(spec)]
        replicate = spec.get("replicate", {})
        by_cel += [rule.message for rule, program in zip(REPLICATE_RULES, replicate_compiled, strict=True)
                   if not program.evaluate({"self": celpy.json_to_cel(replicate)})]  # fmt: skip
        by_check += [rule.message for rule in REPLICATE_RULES if rule.broken(replicate)]
        assert by_cel == by_check, spec
        try:
            VectorMigrationSpec.model_validate(spec)
            refused = None
        except ValueError as error:
            refused = str(error)
        assert (refused is None) == (not by_check), (spec, refused)
        if by_check:
            assert refused is not None and any(message in refused for message in by_check), (spec, refused)
        judged += 1
    assert judged == 5 * 3 * 3 * 2 * 4 * 2
