"""The generated CRD against the API server's own rules (ported in tests/crd_conformance.py, with references)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.crd_conformance import violations
from vector_migration.kube.crd import crd_document


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_api_server_would_accept_the_generated_crd() -> None:
    assert violations(crd_document()) == []


def test_conditions_merge_by_type_and_carry_timestamps() -> None:
    conditions = schema_of(crd_document())["properties"]["status"]["properties"]["conditions"]
    assert (conditions["x-kubernetes-list-type"], conditions["x-kubernetes-list-map-keys"]) == ("map", ["type"])
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_kubectl_lists_migrations_with_their_reason_and_more_with_wide() -> None:
    version = crd_document()["spec"]["versions"][0]
    columns = {column["name"]: column.get("priority", 0) for column in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": 0, "Ready": 0, "Reason": 0, "Message": 0, "Age": 0, "Strategy": 1, "Target": 1, "Plan": 1,
    }  # fmt: skip
    assert crd_document()["spec"]["names"]["categories"] == ["all", "vectormigrations"]


# The checker must be able to fail: each defect an API server refuses, planted in the generated CRD.
def _closed_spec(crd: dict[str, Any]) -> None:
    schema_of(crd)["properties"]["spec"]["additionalProperties"] = False  # the first release's defect


def _map_key_not_required(crd: dict[str, Any]) -> None:
    schema_of(crd)["properties"]["status"]["properties"]["conditions"]["items"]["required"].remove("type")


def _default_outside_its_enum(crd: dict[str, Any]) -> None:
    schema_of(crd)["properties"]["spec"]["properties"]["strategy"]["default"] = "Sideways"


def _default_with_unknown_field(crd: dict[str, Any]) -> None:
    schema_of(crd)["properties"]["spec"]["properties"]["verify"]["default"] = {"sampelQueries": 5}


def _reference(crd: dict[str, Any]) -> None:
    schema_of(crd)["properties"]["spec"]["properties"]["target"] = {"$ref": "#/definitions/Target"}


def _typeless_field(crd: dict[str, Any]) -> None:
    del schema_of(crd)["properties"]["spec"]["properties"]["strategy"]["type"]


def _metadata_constrained(crd: dict[str, Any]) -> None:
    schema_of(crd)["properties"]["metadata"]["properties"] = {"labels": {"type": "object"}}


def _rule_unguarded_against_its_default(crd: dict[str, Any]) -> None:
    # the 0.2.0 CRD's defect, found by a real kube-apiserver: the rule reads spec.strategy, which the
    # spec's default ({}) lacks
    schema_of(crd)["properties"]["spec"]["x-kubernetes-validations"][0]["rule"] = (
        "self.strategy != 'Rebuild' || self.backup.enabled"
    )


def _bad_category(crd: dict[str, Any]) -> None:
    crd["spec"]["names"]["categories"] = ["Vector_Migrations"]


# Each defect and the words of the API server's refusal (tests/real_cluster plants them in the real one)
DEFECTS = [
    (_closed_spec, "additionalProperties and properties are mutual exclusive"),
    (_map_key_not_required, "so it must have a default or be a required property"),
    (_default_outside_its_enum, 'default: Unsupported value: "Sideways": supported values: "InPlace"'),
    (_default_with_unknown_field, "must not have unknown fields"),
    (_reference, "$ref is not supported"),
    (_typeless_field, "must not be empty for specified object fields"),
    (_metadata_constrained, "must not specify anything other than name and generateName"),
    (_bad_category, "a DNS-1035 label must consist of lower case alphanumeric characters"),
    (_rule_unguarded_against_its_default, "no such key: strategy evaluating rule"),
]


@pytest.mark.parametrize(("defect", "message"), DEFECTS)
def test_each_defect_the_api_server_refuses_is_caught(defect: Any, message: str) -> None:
    crd = copy.deepcopy(crd_document())
    defect(crd)
    assert any(message in violation for violation in violations(crd)), violations(crd)
