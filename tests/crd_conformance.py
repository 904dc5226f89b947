"""The API server's own rules for a CustomResourceDefinition, ported so they run without an API server.

helm lint and kubernetes-validate check a CRD's shape against the CRD type's OpenAPI schema, but
not the rules apiextensions-apiserver applies when the CRD is created; a CRD that breaks them is
refused by `kubectl apply` and `helm install` alike. Each rule below names the upstream function
it comes from (kubernetes/kubernetes, staging/src/k8s.io/apiextensions-apiserver):

- V: pkg/apis/apiextensions/validation/validation.go
  (ValidateCustomResourceDefinitionNames, ValidateCustomResourceDefinitionOpenAPISchema,
  specStandardValidatorV3.validate, validateAdditionalPrinterColumns, the list-type checks);
- S: pkg/apiserver/schema/validation.go
  (validateStructuralInvariants, validateStructuralCompleteness, validateGeneric,
  validateExtensions, validateStructuralMetadataInvariants);
- D: pkg/apiserver/schema/defaulting/validation.go (ValidateDefaults: a default must validate
  against its own schema, its CEL rules included, and survive pruning unchanged; the CEL rules
  see the default as written, nothing defaulted inside it, so a rule that reads a field the
  default lacks fails with "no such key". A real kube-apiserver refused the 0.2.0 CRD for this,
  which this port had missed);

A rule this port once had (C: a string, list or map that a CEL rule reads needs maxLength,
maxItems or maxProperties, or the rule's estimated cost exceeds its limit) is gone: a real
kube-apiserver 1.37 accepted the CRD with all 42 such bounds removed. The models keep their
bounds, as limits on input; tests/real_cluster checks the CRD against the real server itself.

`violations(crd)` returns every broken rule as "path: message", in the API server's words where
it has them; an empty list means the API server would accept the schema.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAP_KEY_WORDS = "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"
_DNS1035_WORDS = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic"
    " character, and end with an alphanumeric character"
)
_PRINTER_TYPES = {"integer", "number", "string", "boolean", "date"}
_CEL_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
# specStandardValidatorV3: keywords of JSON Schema a CRD may not use
_UNSUPPORTED = {
    "id": "id is not supported",
    "$ref": "$ref is not supported",
    "definitions": "definitions is not supported",
    "patternProperties": "patternProperties is not supported",
    "additionalItems": "additionalItems is not supported",
    "dependencies": "dependencies is not supported",
}
# V: with the status subresource, the root schema may carry only these (so status can be cut out)
_ALLOWED_AT_ROOT = {
    "description", "type", "format", "title", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "multipleOf", "required", "items",
    "properties", "externalDocs", "example", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
}  # fmt: skip


def violations(crd: dict[str, Any]) -> list[str]:
    """Every rule of the API server's that the CRD breaks."""
    errors = _names(crd["spec"]["names"])
    for index, version in enumerate(crd["spec"]["versions"]):
        where = f"spec.versions[{index}]"
        schema = version["schema"]["openAPIV3Schema"]
        if "status" in (version.get("subresources") or {}):
            if schema.get("type") != "object":
                errors.append(f"{where}.schema.openAPIV3Schema.type: only object is allowed at the root (V)")
            extra = sorted(set(schema) - _ALLOWED_AT_ROOT)
            if extra:
                errors.append(f"{where}.schema.openAPIV3Schema: not allowed at the root with a status: {extra} (V)")
        errors += _node(schema, f"{where}.schema.openAPIV3Schema", root=True)
        errors += _root_metadata(schema, f"{where}.schema.openAPIV3Schema")
        errors += _printer_columns(version.get("additionalPrinterColumns") or [], f"{where}.additionalPrinterColumns")
    return errors


def _names(names: dict[str, Any]) -> list[str]:
    """V: ValidateCustomResourceDefinitionNames."""
    errors = []
    for key in ("plural", "singular"):
        if names.get(key) and not _DNS1035.match(names[key]):
            errors.append(f'spec.names.{key}: Invalid value: "{names[key]}": {_DNS1035_WORDS} (V)')
    for key in ("kind", "listKind"):
        if names.get(key) and not _DNS1035.match(names[key].lower()):
            errors.append(f"spec.names.{key}: may have mixed case, but should otherwise match a DNS-1035 label (V)")
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errors.append("spec.names.listKind: kind and listKind may not be the same (V)")
    for key in ("shortNames", "categories"):
        for index, value in enumerate(names.get(key) or []):
            if not _DNS1035.match(value):
                errors.append(f'spec.names.{key}[{index}]: Invalid value: "{value}": {_DNS1035_WORDS} (V)')
    return errors


def _node(node: dict[str, Any], path: str, root: bool = False) -> list[str]:
    """V and S for one schema node, then its children."""
    errors = [f"{path}.{key}: {message} (V)" for key, message in _UNSUPPORTED.items() if key in node]
    if node.get("type") == "null":
        errors.append(f"{path}.type: type cannot be set to null (V)")
    if node.get("uniqueItems") is True:
        errors.append(f"{path}.uniqueItems: cannot be set to true since the runtime complexity becomes quadratic (V)")
    additional = node.get("additionalProperties")
    if additional is not None and node.get("properties") and (additional is False or isinstance(additional, dict)):
        errors.append(f"{path}.additionalProperties: additionalProperties and properties are mutual exclusive (V)")
    if additional is not None and root:
        errors.append(f"{path}.additionalProperties: must not be used at the root (S)")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        errors.append(f"{path}.x-kubernetes-preserve-unknown-fields: must be true or undefined (S)")
    if int_or_string and preserve:
        errors.append(f"{path}.x-kubernetes-preserve-unknown-fields: must be false if x-kubernetes-int-or-string (S)")
    if not node.get("type") and not int_or_string and not preserve and not node.get("x-kubernetes-embedded-resource"):
        errors.append(f"{path}.type: Required value: must not be empty for specified object fields (S)")
    if node.get("type") == "array" and "items" not in node:
        errors.append(f"{path}.items: Required value: must be specified (S)")
    if isinstance(node.get("items"), list):
        errors.append(f"{path}.items: items must be a schema object and not an array (V)")
    for keyword in ("anyOf", "allOf", "oneOf", "not"):
        if keyword in node and not int_or_string:
            errors.append(f"{path}.{keyword}: this generator emits no value validations; review by hand (S)")
    errors += _list_type(node, path)
    errors += _default(node, path)
    for rule_index, rule in enumerate(node.get("x-kubernetes-validations") or []):
        if rule.get("reason") is not None and rule["reason"] not in _CEL_REASONS:
            errors.append(f"{path}.x-kubernetes-validations[{rule_index}].reason: Unsupported value (V)")
    for name, child in (node.get("properties") or {}).items():
        errors += _node(child, f"{path}.properties[{name}]")
    if isinstance(node.get("items"), dict):
        errors += _node(node["items"], f"{path}.items")
    if isinstance(additional, dict):
        errors += _node(additional, f"{path}.additionalProperties")
    return errors


def _list_type(node: dict[str, Any], path: str) -> list[str]:
    """V: x-kubernetes-list-type and x-kubernetes-list-map-keys."""
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    errors = []
    if list_type is not None and node.get("type") != "array":
        errors.append(f"{path}.x-kubernetes-list-type: must only be used if type == array (V)")
    if list_type not in (None, "atomic", "set", "map"):
        errors.append(f"{path}.x-kubernetes-list-type: Unsupported value {list_type!r} (V)")
    if keys is not None and list_type != "map":
        errors.append(f"{path}.x-kubernetes-list-map-keys: must only be used if x-kubernetes-list-type == map (V)")
    if list_type == "map":
        items = node.get("items") or {}
        if not keys:
            errors.append(f"{path}.x-kubernetes-list-map-keys: Required value: must not be empty if map (V)")
        if items.get("type") != "object":
            errors.append(f"{path}.items.type: must be object if x-kubernetes-list-type is map (V)")
        for key in keys or []:
            field = (items.get("properties") or {}).get(key)
            if field is None:
                errors.append(f"{path}.x-kubernetes-list-map-keys: entries must all be names of item properties (V)")
            elif field.get("type") not in ("string", "integer", "number", "boolean"):
                errors.append(f"{path}.items.properties[{key}].type: must be a scalar type if used as a map key (V)")
            elif key not in (items.get("required") or []) and "default" not in field:
                errors.append(f"{path}.items.properties[{key}]: {_MAP_KEY_WORDS} (V)")
    if list_type == "set" and (node.get("items") or {}).get("type") not in ("string", "integer", "number", "boolean"):
        errors.append(f"{path}.items.type: must be a scalar type if x-kubernetes-list-type is set (V)")
    return errors


def _default(node: dict[str, Any], path: str) -> list[str]:
    """D: a default validates against the schema it sits in, and pruning leaves it unchanged."""
    if "default" not in node:
        return []
    default = node["default"]
    if default is None and not node.get("nullable"):
        return [f"{path}.default: must not be null for a non-nullable schema (D)"]
    errors = []
    try:
        jsonschema.Draft4Validator(as_json_schema(node)).validate(default)
    except jsonschema.ValidationError as error:
        if error.validator == "enum":  # the API server's words for an enum
            allowed = ", ".join(f'"{value}"' for value in error.validator_value)
            errors.append(f'{path}.default: Unsupported value: "{error.instance}": supported values: {allowed} (D)')
        else:
            errors.append(f"{path}.default: Invalid value: {error.message} (D)")
    if prune(copy.deepcopy(default), node) != default:
        errors.append(f"{path}.default: must not have unknown fields (D)")
    for rule in node.get("x-kubernetes-validations", []):
        problem = _cel_on(rule["rule"], default)
        if problem:
            words = rule.get("message", rule["rule"])
            errors.append(f'{path}.default: Invalid value: "object": {problem} evaluating rule: {words} (D)')
    return errors


def _cel_on(rule: str, value: Any) -> str | None:
    """What is wrong when ``rule`` is evaluated with ``self`` = ``value``: an error, a false result, or None."""
    import celpy

    environment = celpy.Environment()

    def evaluate(expression: str) -> Any:
        try:
            return environment.program(environment.compile(expression)).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as error:
            return error

    result = evaluate(rule)
    if not isinstance(result, celpy.CELEvalError):
        return None if bool(result) else "failed rule"
    # cel-python reports `a || b` with both sides failing as an overload error; the API server names
    # the missing field, so find the first field the rule reads that the value lacks
    for reference in re.findall(r"self(?:\.[A-Za-z_][A-Za-z0-9_]*)+", rule):
        if isinstance(evaluate(reference), celpy.CELEvalError):
            missing = reference.split(".")[-1]
            parent = ".".join(reference.split(".")[:-1])
            if not isinstance(evaluate(parent), celpy.CELEvalError):
                return f"no such key: {missing}"
    return str(result.args[0] if result.args else result)


def as_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 structural node as plain JSON Schema, for validating defaults."""
    schema: dict[str, Any] = {
        key: value
        for key, value in node.items()
        if key
        in (
            "enum", "minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "required",
            "maxProperties", "minProperties", "multipleOf",
        )
    }  # fmt: skip
    if node.get("type"):
        schema["type"] = [node["type"], "null"] if node.get("nullable") else node["type"]
    if node.get("x-kubernetes-int-or-string"):
        schema["type"] = ["integer", "string"]
    if node.get("properties"):
        schema["properties"] = {name: as_json_schema(child) for name, child in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        schema["items"] = as_json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        schema["additionalProperties"] = as_json_schema(node["additionalProperties"])
    return schema


def prune(value: Any, node: dict[str, Any]) -> Any:
    """What the API server keeps of a value: fields its schema does not know are dropped."""
    if node.get("x-kubernetes-preserve-unknown-fields") or not isinstance(value, dict | list):
        return value
    if isinstance(value, list):
        return [prune(item, node.get("items") or {}) for item in value]
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        return {key: prune(item, additional) for key, item in value.items()}
    known = node.get("properties") or {}
    return {key: prune(item, known[key]) for key, item in value.items() if key in known}


def _root_metadata(schema: dict[str, Any], path: str) -> list[str]:
    """S: validateStructuralMetadataInvariants at the root."""
    errors = []
    properties = schema.get("properties") or {}
    for key in ("apiVersion", "kind"):
        if key in properties and properties[key].get("type") != "string":
            errors.append(f"{path}.properties[{key}].type: must be string (S)")
    metadata = properties.get("metadata")
    if metadata is not None:
        if metadata.get("type") != "object":
            errors.append(f"{path}.properties[metadata].type: must be object (S)")
        extra = set(metadata) - {"type", "properties"}
        unknown = set(metadata.get("properties") or {}) - {"name", "generateName"}
        if extra or unknown:
            errors.append(
                f"{path}.properties[metadata]: must not specify anything other than name and generateName (S)"
            )
    return errors


def _printer_columns(columns: list[dict[str, Any]], path: str) -> list[str]:
    """V: validateAdditionalPrinterColumns."""
    errors = []
    for index, column in enumerate(columns):
        where = f"{path}[{index}]"
        if not column.get("name"):
            errors.append(f"{where}.name: Required value (V)")
        if column.get("type") not in _PRINTER_TYPES:
            errors.append(f"{where}.type: Unsupported value {column.get('type')!r} (V)")
        if not str(column.get("jsonPath", "")).startswith("."):
            errors.append(f"{where}.jsonPath: must be a simple json path starting with . (V)")
        if int(column.get("priority", 0)) < 0:
            errors.append(f"{where}.priority: must be non-negative (V)")
    return errors
