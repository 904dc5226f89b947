"""The Helm chart, rendered by Helm itself (helm-python-sdk binds Helm's Go SDK; no binary, no cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "vector-migration-operator"
RELEASE, NAMESPACE = "vmo", "operators"


def render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """Every object the chart renders for these values (NOTES.txt left out)."""
    chart = helm.Chart.load(CHART)
    manifests = chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True)
    return [
        document
        for name, text in sorted(manifests.items())
        if name.endswith((".yaml", ".yml"))
        for document in yaml.safe_load_all(text)
        if document
    ]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def rules(objects: list[dict[str, Any]], kind: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
    for role in of_kind(objects, kind):
        if namespace is None or role["metadata"].get("namespace") == namespace:
            yield from role["rules"]


def allows(role_rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    """Whether RBAC rules admit one request, as the API server's authorizer decides."""
    for rule in role_rules:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            names = rule.get("resourceNames")
            if not names or (name is not None and name in names):
                return True
    return False


def assert_allowed_by_the_chart(requests: set[tuple[str, str, str, str | None]]) -> None:
    """Every request the operator made is one the chart's default ClusterRole grants."""
    granted = list(rules(render(), "ClusterRole"))
    refused = sorted(r for r in requests if not allows(granted, r[0], r[1], r[2], r[3]))
    assert refused == [], f"the chart's RBAC would refuse: {refused}"
