"""The Helm chart: lint-clean, valid objects for every supported combination of values, least privilege."""

from __future__ import annotations

import tomllib
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.chart import CHART, NAMESPACE, ROOT, allows, of_kind, render, rules

KUBERNETES = "1.31.0"  # the oldest minor the chart is validated against (kubeVersion allows >=1.28)
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "two replicas": {"replicas": 2},
    "metrics off": {"metrics": {"enabled": False}},
    "custom image": {"image": {"repository": "registry.example.com/ops/vmo", "tag": "0.1.0-rc1"}},
    "image by digest": {"image": {"repository": "registry.example.com/ops/vmo", "digest": "sha256:" + "ab" * 32}},
    "everything on": {
        "replicas": 3,
        "watchNamespaces": ["shop"],
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {"enabled": True, "postgresPorts": [5432, 6432]},
    },
}
# Kinds kubernetes-validate knows; the others are custom resources checked by their own tests.
CUSTOM_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}


@pytest.mark.parametrize("values", MATRIX.values(), ids=MATRIX.keys())
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", MATRIX.values(), ids=MATRIX.keys())
def test_every_rendered_object_is_valid_kubernetes(values: dict[str, Any]) -> None:
    objects = render(values)
    assert of_kind(objects, "Deployment")
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


@pytest.mark.parametrize("values", MATRIX.values(), ids=MATRIX.keys())
def test_the_pod_runs_restricted(values: dict[str, Any]) -> None:
    (deployment,) = of_kind(render(values), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["port"] == "health"
        assert "limits" in container["resources"] and "requests" in container["resources"]
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_the_image_tag_defaults_to_the_app_version_which_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == package
    (deployment,) = of_kind(render(), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":{package}")
    (custom,) = of_kind(render(MATRIX["image by digest"]), "Deployment")
    assert custom["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/ops/vmo@sha256:" + "ab" * 32
    )


def test_the_chart_ships_the_same_crd_as_the_repository() -> None:
    assert (CHART / "crds" / "vectormigration.yaml").read_text() == (ROOT / "crds" / "vectormigration.yaml").read_text()


def test_watching_every_namespace_takes_a_cluster_role_and_a_list_takes_roles_only() -> None:
    everywhere = render()
    assert [r["metadata"]["name"] for r in of_kind(everywhere, "ClusterRole")] == ["vmo-vector-migration-operator"]
    assert of_kind(everywhere, "Role") == []
    assert (
        "--all-namespaces" in of_kind(everywhere, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    )

    listed = render(MATRIX["namespaced"])
    assert of_kind(listed, "ClusterRole") == [] and of_kind(listed, "ClusterRoleBinding") == []
    assert sorted(r["metadata"]["namespace"] for r in of_kind(listed, "Role")) == ["team-a", "team-b"]
    bindings = of_kind(listed, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": "vmo-vector-migration-operator",
                                  "namespace": NAMESPACE}] for b in bindings)  # fmt: skip
    args = of_kind(listed, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args
    assert sorted(p["metadata"]["namespace"] for p in of_kind(listed, "KopfPeering")) == ["team-a", "team-b"]


@pytest.mark.parametrize("values", [MATRIX["defaults"], MATRIX["namespaced"]], ids=["cluster", "namespaced"])
def test_rbac_grants_exact_verbs_and_nothing_wild(values: dict[str, Any]) -> None:
    objects = render(values)
    granted = [rule for kind in ("ClusterRole", "Role") for rule in rules(objects, kind)]
    for rule in granted:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
    secrets = [rule for rule in granted if "secrets" in rule["resources"]]
    assert {verb for rule in secrets for verb in rule["verbs"]} == {"get"}  # read one by name, never list
    assert not allows(granted, "", "pods", "create")
    assert not allows(granted, "batch", "jobs", "delete")  # Jobs go with their owner, by the garbage collector
    assert not allows(granted, "rbac.authorization.k8s.io", "clusterroles", "bind")
    for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding"):
        assert binding["roleRef"]["name"] != "cluster-admin"


def test_a_pod_disruption_budget_only_with_more_than_one_replica() -> None:
    assert of_kind(render(), "PodDisruptionBudget") == []
    (budget,) = of_kind(render(MATRIX["two replicas"]), "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1


def test_metrics_service_monitor_and_network_policy_follow_their_switches() -> None:
    assert of_kind(render(MATRIX["metrics off"]), "Service") == []
    deployment = of_kind(render(MATRIX["metrics off"]), "Deployment")[0]
    assert "--metrics-port=0" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert of_kind(render(), "ServiceMonitor") == [] and of_kind(render(), "NetworkPolicy") == []

    objects = render(MATRIX["everything on"])
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (policy,) = of_kind(objects, "NetworkPolicy")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 443, 6443, 5432, 6432} <= egress_ports


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"replicas": 0}, "replicas"),
        ({"replica": 2}, "replica"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"image": {"repository": "x", "tag": "latest latest"}}, "tag"),
    ],
)
def test_the_values_schema_rejects_bad_values_naming_them(values: dict[str, Any], named: str) -> None:
    with pytest.raises(helm.HelmError) as rejected:
        helm.Chart.load(CHART).validate_schema(values)
    assert named in str(rejected.value)
