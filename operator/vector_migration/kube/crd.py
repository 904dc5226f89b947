"""The CustomResourceDefinition, generated from the pydantic models (one source of truth).

Pydantic's JSON Schema is turned into a Kubernetes structural schema: references inlined,
``anyOf [X, null]`` turned into ``nullable``, free-form maps marked to keep unknown fields.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from ..api import SPEC_MUTABLE_AFTER_SWAP, VectorMigrationSpec, VectorMigrationStatus
from ..vocabulary import (
    API_GROUP,
    API_VERSION,
    CATEGORIES,
    KIND,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    ConditionType,
    Phase,
)

_KEEP = {
    "type",
    "properties",
    "items",
    "enum",
    "default",
    "description",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minLength",
    "maxLength",
    "required",
    "additionalProperties",
    "format",
    "minItems",
    "maxItems",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "maxProperties",
}

# Phases in which the swap has started (or is done): the spec then describes work under way.
_SWAP_STARTED_PHASES = (
    Phase.SWAP,
    Phase.BACKFILL,
    Phase.REINDEX,
    Phase.VERIFY,
    Phase.CUTOVER,
    Phase.FINALIZE,
    Phase.SUCCEEDED,
    Phase.ROLLING_BACK,
    Phase.ROLLED_BACK,
)


def one_paragraph_a_line(text: str) -> str:
    """A docstring as `kubectl explain` wraps it best: each paragraph on one line."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


def structural(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON Schema node into a structural OpenAPI v3 node."""
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, definitions)
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        if len(options) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            node = structural({**options[0], **rest}, definitions)
        elif all(option.get("type") in ("integer", "string", "number") for option in options):
            node = {"x-kubernetes-int-or-string": True}
            if "description" in schema:
                node["description"] = one_paragraph_a_line(schema["description"])
        else:
            node = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if nullable:
            node["nullable"] = True
        if schema.get("default") is not None and "default" not in node:
            node["default"] = schema["default"]
        return node
    node = {key: copy.deepcopy(value) for key, value in schema.items() if key in _KEEP}
    if "description" in node:
        node["description"] = one_paragraph_a_line(node["description"])
    if "properties" in node:
        node["properties"] = {name: structural(sub, definitions) for name, sub in node["properties"].items()}
    if "items" in node:
        node["items"] = structural(node["items"], definitions)
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        if additional:
            node["additionalProperties"] = structural(additional, definitions)
        else:
            del node["additionalProperties"]
            node["x-kubernetes-preserve-unknown-fields"] = True
    elif additional is True or (
        node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node
    ):
        node.pop("additionalProperties", None)
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "properties" in node and node.get("additionalProperties") is False:
        # A closed object in pydantic (extra="forbid"). The API server forbids additionalProperties
        # beside properties (it prunes unknown fields instead, and kubectl's field validation
        # reports them), so the object is left open here and stays closed in the models.
        del node["additionalProperties"]
    if node.get("default") is None:
        node.pop("default", None)
    if "const" in schema:
        node["enum"] = [schema["const"]]
    return node


def _model_schema(model: type[VectorMigrationSpec] | type[VectorMigrationStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return structural(raw, definitions)


def default_nested_objects(node: dict[str, Any]) -> dict[str, Any]:
    """Give every optional sub-object ``default: {}``, so the API server fills in its defaults.

    Then ``kubectl get -o yaml`` shows the effective spec, and CEL rules can read nested fields
    without guarding each parent.
    """
    for child in (node.get("properties") or {}).values():
        if child.get("type") == "object" and "properties" in child:
            default_nested_objects(child)
            if not child.get("required") and not child.get("nullable"):
                child.setdefault("default", {})
    return node


def _has_free_form(node: dict[str, Any]) -> bool:
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return True
    return any(_has_free_form(child) for child in (node.get("properties") or {}).values())


def _unchanged(node: dict[str, Any], path: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """CEL terms saying that every field under ``path`` equals its old value (free-form maps excluded)."""
    terms = []
    for name, child in node["properties"].items():
        field = f"{path}.{name}"
        if name in skip or child.get("x-kubernetes-preserve-unknown-fields"):
            continue
        if "properties" in child and "default" in child and _has_free_form(child):
            terms += _unchanged(child, field)
        else:
            new, old = f"self.{field}", f"oldSelf.{field}"
            terms.append(f"(has({new}) == has({old}) && (!has({new}) || {new} == {old}))")
    return terms


def spec_frozen_after_swap_rule(spec_schema: dict[str, Any]) -> dict[str, Any]:
    """The root CEL rule: once the swap has started, only the fields people steer may change."""
    phases = ", ".join(f"'{phase.value}'" for phase in _SWAP_STARTED_PHASES)
    swapped = ConditionType.EXTENSION_SWAPPED.value
    started = (
        f"has(oldSelf.status) && ((has(oldSelf.status.phase) && oldSelf.status.phase in [{phases}]) || "
        f"(has(oldSelf.status.conditions) && oldSelf.status.conditions.exists(c, c.type == '{swapped}' && "
        f"c.status == 'True')))"
    )
    unchanged = " && ".join(_unchanged(spec_schema, "spec", SPEC_MUTABLE_AFTER_SWAP))
    mutable = ", ".join(sorted(SPEC_MUTABLE_AFTER_SWAP))
    return {
        "rule": f"!({started}) || ({unchanged})",
        "message": f"spec cannot change once the swap has started (except {mutable}); "
        "create a new VectorMigration for a new migration",
        "reason": "FieldValueForbidden",
        "fieldPath": ".spec",
    }


_READY = '.status.conditions[?(@.type=="Ready")]'
# `kubectl get vmig` shows what a person checks first; `-o wide` (priority 1) adds what was asked for.
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "string", "jsonPath": f"{_READY}.status"},
    {"name": "Reason", "type": "string", "jsonPath": f"{_READY}.reason"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Strategy", "type": "string", "jsonPath": ".spec.strategy", "priority": 1},
    {"name": "Target", "type": "string", "jsonPath": ".spec.target.extension", "priority": 1},
    {"name": "Plan", "type": "string", "jsonPath": ".status.planHash", "priority": 1},
]


def crd_document() -> dict[str, Any]:
    """The CRD as a dictionary."""
    spec_schema = default_nested_objects(_model_schema(VectorMigrationSpec))
    status_schema = _model_schema(VectorMigrationStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Moves a PostgreSQL database from pgvector to RuVector, losing nothing.",
                            "x-kubernetes-validations": [spec_frozen_after_swap_rule(spec_schema)],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {**spec_schema, "default": {}},
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as YAML, with a header saying where it comes from."""
    header = "# Generated by `vector-migration crd` from operator/vector_migration/api/. Do not edit.\n"
    return header + yaml.safe_dump(crd_document(), sort_keys=False)
