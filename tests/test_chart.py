"""The Helm chart: lint-clean, valid objects for every supported combination of values, least privilege."""

from __future__ import annotations

import tomllib
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.chart import CHART, NAMESPACE, OPERATOR_ROLE, ROOT, allows, of_kind, render, rules
from tests.crd_conformance import violations
from vector_migration.api import JobDefaults, VectorMigration
from vector_migration.kube.builders import build_backup_job
from vector_migration.kube.crd import crd_document

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
    "monitoring": {
        "metrics": {
            "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "waitingForAPersonFor": "4h", "replicationLagBytes": 5 * 2**30},
            "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
        }
    },
    "openshift": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None}},
    "extras": {
        "extraArgs": ["--log-level=debug"],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
        "logging": {"format": "json"},
    },
    "renamed": {"fullnameOverride": "vmig", "nameOverride": "vmig-operator"},
    "scheduling and probes": {
        "terminationGracePeriodSeconds": 300,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "vector-migration-operator"}},
            }
        ],
        "envFrom": [{"configMapRef": {"name": "proxy-settings"}}],
        "livenessProbe": {"initialDelaySeconds": 30, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 5},
        "readinessProbe": {"periodSeconds": 5, "timeoutSeconds": 2},
    },
    "standalone": {"leaderElection": {"enabled": False}},
    "rbac managed elsewhere": {"rbac": {"create": False}},
    "crds managed elsewhere": {"crds": {"create": False}, "rbac": {"aggregateToDefaultRoles": False}},
    "air-gapped jobs": {
        "jobs": {
            "imageRepository": "registry.internal/mirror/postgres",
            "imagePullSecrets": [{"name": "mirror-pull"}],
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        }
    },
    "jobs in a mesh on openshift": {
        "jobs": {
            "podAnnotations": {"sidecar.istio.io/inject": "false"},
            "podLabels": {"team": "data", "app.kubernetes.io/component": "mine"},
            "storageClassName": "fast-ssd",
            "runAsUser": None,
        }
    },
}
# Kinds kubernetes-validate knows; the others are custom resources checked by their own tests.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"}


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
    uid = pod["securityContext"].get("runAsUser", 10001)  # absent: the platform assigns one (OpenShift)
    assert isinstance(uid, int) and uid > 0
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
    shipped = CHART / "files" / "crds" / "vectormigration.yaml"
    assert shipped.read_text() == (ROOT / "crds" / "vectormigration.yaml").read_text()


def test_the_crd_is_a_template_that_upgrades_and_outlives_the_release() -> None:
    (crd,) = of_kind(render(), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["spec"] == crd_document()["spec"]
    assert violations(crd) == []
    assert of_kind(render(MATRIX["crds managed elsewhere"]), "CustomResourceDefinition") == []
    (unkept,) = of_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in unkept["metadata"]


def test_people_with_view_and_edit_get_vectormigrations_too() -> None:
    roles = {r["metadata"]["name"]: r for r in of_kind(render(), "ClusterRole")}
    view, edit = roles["vmo-vector-migration-operator-view"], roles["vmo-vector-migration-operator-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert allows(view["rules"], "ruvector.dev", "vectormigrations", "watch")
    assert not allows(view["rules"], "ruvector.dev", "vectormigrations", "patch")
    assert {"aggregate-to-edit", "aggregate-to-admin"} <= {
        key.rsplit("/", 1)[-1] for key, value in edit["metadata"]["labels"].items() if value == "true"
    }
    assert allows(edit["rules"], "ruvector.dev", "vectormigrations", "patch")  # approve, promote, pause
    assert not allows(edit["rules"], "ruvector.dev", "vectormigrations/status", "patch")  # only the operator
    assert [r["metadata"]["name"] for r in of_kind(render(MATRIX["crds managed elsewhere"]), "ClusterRole")] == [
        "vmo-vector-migration-operator"
    ]


def test_extra_arguments_environment_and_volumes_reach_the_operator() -> None:
    (deployment,) = of_kind(render(MATRIX["extras"]), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][-1] == "--log-level=debug" and "--log-format=json" in container["args"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"} in container["env"]
    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in pod["volumes"]
    assert {"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True} in container["volumeMounts"]


def test_scheduling_environment_and_probe_timing_reach_the_pod() -> None:
    (deployment,) = of_kind(render(MATRIX["scheduling and probes"]), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] == 300
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert container["envFrom"] == [{"configMapRef": {"name": "proxy-settings"}}]
    assert (
        container["livenessProbe"]["failureThreshold"] == 5
        and container["livenessProbe"]["httpGet"]["port"] == "health"
    )
    assert (container["readinessProbe"]["periodSeconds"], container["readinessProbe"]["timeoutSeconds"]) == (5, 2)


def test_without_leader_election_it_runs_standalone_with_no_peering_and_one_replica() -> None:
    listed = render(MATRIX["standalone"])
    (deployment,) = of_kind(listed, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args and not any(a.startswith("--peering") for a in args)
    assert not of_kind(listed, "ClusterKopfPeering") and not of_kind(listed, "KopfPeering")
    assert not any("kopf.dev" in rule["apiGroups"] for rule in rules(listed, "ClusterRole"))
    assert any(rules(listed, "ClusterRole"))  # its other grants stay
    with pytest.raises(helm.HelmError):  # two replicas without peering would both act
        helm.Chart.load(CHART).validate_schema({"leaderElection": {"enabled": False}, "replicas": 2})


def test_rbac_can_be_left_to_a_platform_team() -> None:
    listed = render(MATRIX["rbac managed elsewhere"])

    operator_roles = [o for o in listed if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
                      and o["metadata"]["name"] == OPERATOR_ROLE]  # fmt: skip
    assert operator_roles == []
    assert of_kind(listed, "Deployment")


def test_on_openshift_the_fixed_ids_can_go_and_the_pod_stays_restricted() -> None:
    (deployment,) = of_kind(render(MATRIX["openshift"]), "Deployment")
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert "runAsUser" not in security and "runAsGroup" not in security
    assert security["runAsNonRoot"] is True and security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_names_follow_the_overrides() -> None:
    objects = render(MATRIX["renamed"])
    (deployment,) = of_kind(objects, "Deployment")
    assert deployment["metadata"]["name"] == "vmig"
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "vmig-operator"
    assert {o["metadata"]["name"] for o in of_kind(objects, "ServiceAccount")} == {"vmig"}


def _job_defaults(values: dict[str, Any]) -> JobDefaults:
    (deployment,) = of_kind(render(values), "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    return JobDefaults.model_validate_json(env["VMIG_JOB_DEFAULTS"])


def backup_job(resource: VectorMigration, defaults: JobDefaults) -> dict[str, Any]:
    """The backup Job the operator would start for ``resource`` with the chart's ``defaults``."""
    return build_backup_job(
        resource,
        defaults=defaults,
        secret_name="shop-app",
        connection={"PGHOST": "db"},
        archive_name="a.dump",
        tables=[],
        server_major=17,
        plan_hash="sha256:0123456789abcdef",
    )


def test_the_jobs_take_the_charts_defaults_and_a_spec_overrides_them() -> None:
    defaults = _job_defaults(MATRIX["air-gapped jobs"])
    resource = VectorMigration.model_validate(
        {
            "apiVersion": "ruvector.dev/v1alpha1",
            "kind": "VectorMigration",
            "metadata": {"name": "shop", "namespace": "shop", "uid": "u-1"},
            "spec": {"target": {"extension": "ruvector"}, "backup": {"nodeSelector": {"pool": "db"}}},
        }
    )
    job = backup_job(resource, defaults)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.internal/mirror/postgres:17"
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}  # a quota admits it
    assert pod["imagePullSecrets"] == [{"name": "mirror-pull"}]
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"pool": "db"}  # the spec's, not the chart's
    kubernetes_validate.validate(job, KUBERNETES, strict=True)


def test_the_jobs_pods_take_the_charts_annotations_labels_and_ids_or_none() -> None:
    defaults = _job_defaults(MATRIX["jobs in a mesh on openshift"])
    resource = VectorMigration.model_validate(
        {"apiVersion": "ruvector.dev/v1alpha1", "kind": "VectorMigration",
         "metadata": {"name": "shop", "namespace": "shop", "uid": "u-1"}, "spec": {"target": {"extension": "ruvector"}}}
    )  # fmt: skip
    job = backup_job(resource, defaults)

    template = job["spec"]["template"]
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert template["metadata"]["labels"]["team"] == "data"
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] != "mine"  # the operator's own win
    assert template["spec"]["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert defaults.storage_class_name == "fast-ssd"
    kubernetes_validate.validate(job, KUBERNETES, strict=True)
    default_job = backup_job(resource, _job_defaults({}))
    assert default_job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 999
    assert "annotations" not in default_job["spec"]["template"]["metadata"]


def test_watching_every_namespace_takes_a_cluster_role_and_a_list_takes_roles_only() -> None:
    everywhere = render()
    assert sorted(r["metadata"]["name"] for r in of_kind(everywhere, "ClusterRole")) == [
        "vmo-vector-migration-operator", "vmo-vector-migration-operator-edit", "vmo-vector-migration-operator-view",
    ]  # fmt: skip
    assert of_kind(everywhere, "Role") == []
    assert (
        "--all-namespaces" in of_kind(everywhere, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    )

    listed = render(MATRIX["namespaced"])
    assert sorted(r["metadata"]["name"] for r in of_kind(listed, "ClusterRole")) == [
        "vmo-vector-migration-operator-edit",
        "vmo-vector-migration-operator-view",
    ]  # aggregated for people; the operator itself has nothing cluster-wide
    assert of_kind(listed, "ClusterRoleBinding") == []
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
    # read one by name, never list or delete; create and patch publish Replicate's <name>-target
    assert {verb for rule in secrets for verb in rule["verbs"]} == {"get", "create", "patch"}
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


def test_it_installs_as_a_subchart_of_an_umbrella_chart_whose_global_values_it_receives() -> None:
    # helm/helm#10392: a root additionalProperties: false refused `global` in a subchart
    values = {"global": {"imageRegistry": "mirror.example", "storageClass": "fast"}}

    helm.Chart.load(CHART).validate_schema(values)
    assert render(values)


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
