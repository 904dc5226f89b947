"""GitOps health: the shipped Argo CD check and Flux example, on the edges the operator tests do not reach."""

from __future__ import annotations

import yaml

from tests.gitops import GITOPS, argo_health, kstatus
from vector_migration.vocabulary import API_GROUP, API_VERSION, KIND


def resource(generation: int = 1, **status: object) -> dict[str, object]:
    body: dict[str, object] = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND}
    body["metadata"] = {"name": "shop", "namespace": "shop", "generation": generation}
    if status:
        body["status"] = status
    return body


def condition(kind: str, value: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": value, "reason": reason, "message": message, "lastTransitionTime": "x"}


def test_a_resource_the_operator_has_not_seen_yet_is_progressing() -> None:
    assert argo_health(resource()) == ("Progressing", "waiting for the operator to report a status")


def test_a_spec_edit_the_operator_has_not_observed_is_progressing_even_if_ready_before() -> None:
    stale = resource(
        generation=2, observedGeneration=1, phase="Succeeded", conditions=[condition("Ready", "True", "Succeeded")]
    )
    assert argo_health(stale) == ("Progressing", "the operator has not yet seen the latest spec")
    assert kstatus(stale) == "InProgress"


def test_a_stalled_migration_is_degraded_whatever_else_it_says() -> None:
    stalled = resource(
        observedGeneration=1,
        phase="RolledBack",
        conditions=[condition("Ready", "False", "RecallDropped", "recall fell"), condition("Stalled", "True",
                    "RecallDropped", "recall fell"), condition("RolledBack", "True", "Completed")],
    )  # fmt: skip
    assert argo_health(stalled) == ("Degraded", "RecallDropped: recall fell")
    assert kstatus(stalled) == "Failed"


def test_the_argocd_configmap_carries_the_same_lua_as_the_file() -> None:
    configmap = yaml.safe_load((GITOPS / "argocd-cm.yaml").read_text())
    embedded = configmap["data"][f"resource.customizations.health.{API_GROUP}_{KIND}"]
    assert embedded == (GITOPS / "argocd-health.lua").read_text()


def test_the_flux_example_waits_for_vector_migrations() -> None:
    kustomization = yaml.safe_load((GITOPS / "flux-kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    checks = kustomization["spec"]["healthChecks"]
    assert {(c["apiVersion"], c["kind"]) for c in checks} == {(f"{API_GROUP}/{API_VERSION}", KIND)}
    assert kustomization["spec"]["prune"] is False


def test_a_rollback_waiting_for_consent_to_restore_is_suspended() -> None:
    waiting = resource(
        observedGeneration=1,
        phase="RollingBack",
        conditions=[condition("Ready", "False", "RestoreNeedsConsent", "consent with sha256:…"),
                    condition("Reconciling", "True", "RestoreNeedsConsent", "consent with sha256:…"),
                    condition("Stalled", "False", "RestoreNeedsConsent")],
    )  # fmt: skip
    assert argo_health(waiting) == ("Suspended", "RestoreNeedsConsent: consent with sha256:…")
