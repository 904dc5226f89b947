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
OPERATOR_ROLE = f"{RELEASE}-vector-migration-operator"  # the operator's own (Cluster)Roles, not the aggregated ones


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
    """The rules the operator's ServiceAccount is bound to (the roles aggregated for people are not)."""
    for role in of_kind(objects, kind):
        if role["metadata"]["name"] != OPERATOR_ROLE:
            continue
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


# Every request the operator made in any test that checked its RBAC: at the end of a full run,
# each grant of the chart must have been used by one of them (tests/conftest.py).
OBSERVED_REQUESTS: set[tuple[str, str, str, str | None]] = set()


def assert_allowed_by_the_chart(requests: set[tuple[str, str, str, str | None]]) -> None:
    """Every request the operator made is one the chart's default ClusterRole grants."""
    OBSERVED_REQUESTS.update(requests)
    granted = list(rules(render(), "ClusterRole"))
    refused = sorted(r for r in requests if not allows(granted, r[0], r[1], r[2], r[3]))
    assert refused == [], f"the chart's RBAC would refuse: {refused}"


# Grants no request can show, each with why it is needed all the same.
NEEDED_WITHOUT_A_REQUEST = {
    # The API server checks it when the Jobs and ConfigMaps carry blockOwnerDeletion owner references
    # (OwnerReferencesPermissionEnforcement); the emulator has no admission plugins.
    "ruvector.dev/vectormigrations/finalizers update",
    # kopf's documented peering RBAC; its peering code may read the object it patches.
    "kopf.dev/clusterkopfpeerings get",
}


def unused_grants(requests: set[tuple[str, str, str, str | None]]) -> list[str]:
    """(group, resource, verb) the chart's default ClusterRole grants that no observed request used."""
    unused = []
    for rule in rules(render(), "ClusterRole"):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    used = any(
                        (g, r, v) == (group, resource, verb)
                        and (not rule.get("resourceNames") or n in rule["resourceNames"])
                        for g, r, v, n in requests
                    )
                    grant = f"{group or 'core'}/{resource} {verb}"
                    if not used and grant not in NEEDED_WITHOUT_A_REQUEST:
                        unused.append(grant)
    return sorted(set(unused))
