"""The CustomResourceDefinition, generated from the pydantic models (one source of truth).

Pydantic's JSON Schema is turned into a Kubernetes structural schema: references inlined,
``anyOf [X, null]`` turned into ``nullable``, free-form maps marked to keep unknown fields.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .api import VectorMigrationSpec, VectorMigrationStatus
from .vocabulary import API_GROUP, API_VERSION, KIND, PLURAL, SHORT_NAME, SINGULAR

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
}


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
                node["description"] = schema["description"]
        else:
            node = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if nullable:
            node["nullable"] = True
        if schema.get("default") is not None and "default" not in node:
            node["default"] = schema["default"]
        return node
    node = {key: copy.deepcopy(value) for key, value in schema.items() if key in _KEEP}
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
    if node.get("default") is None:
        node.pop("default", None)
    if "const" in schema:
        node["enum"] = [schema["const"]]
    return node


def _model_schema(model: type[VectorMigrationSpec] | type[VectorMigrationStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return structural(raw, definitions)


def crd_document() -> dict[str, Any]:
    """The CRD as a dictionary."""
    spec_schema = _model_schema(VectorMigrationSpec)
    status_schema = _model_schema(VectorMigrationStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": [SHORT_NAME]},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Strategy", "type": "string", "jsonPath": ".spec.strategy"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 0},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Moves a PostgreSQL database from pgvector to RuVector, losing nothing.",
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
    header = "# Generated by `vector-migration crd` from operator/vector_migration/api.py. Do not edit.\n"
    return header + yaml.safe_dump(crd_document(), sort_keys=False)
