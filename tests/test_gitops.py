"""GitOps health: the shipped Argo CD check and Flux example, on the edges the operator tests do not reach."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.gitops import GITOPS, argo_health, kstatus, kubectl_wait_ready
from vector_migration.api import VectorMigrationStatus
from vector_migration.status import WAITING_ON_A_PERSON, fail, hold, set_phase, summarize
from vector_migration.vocabulary import API_GROUP, API_VERSION, KIND, Phase, Reason


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


def as_resource(status: VectorMigrationStatus) -> dict[str, object]:
    written = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return resource(observedGeneration=1, **{k: v for k, v in written.items() if k != "observedGeneration"})


@pytest.mark.parametrize("reason", sorted(WAITING_ON_A_PERSON, key=lambda r: r.value), ids=lambda r: r.value)
def test_a_hold_for_a_person_is_suspended_in_argo_cd_and_waiting_in_flux(reason: Reason) -> None:
    status = VectorMigrationStatus()
    set_phase(status, Phase.VERIFY, "verifying")
    hold(status, reason, "a person decides")

    seen = as_resource(status)

    assert argo_health(seen) == ("Suspended", f"{reason.value}: a person decides")
    assert kstatus(seen) == "InProgress"  # Flux waits (until its own timeout), it does not fail at once
    assert not kubectl_wait_ready(seen)


@pytest.mark.parametrize(
    ("arrange", "argo", "flux"),
    [
        (lambda s: set_phase(s, Phase.SWAP, "swapping"), "Progressing", "InProgress"),
        (lambda s: hold(s, Reason.MIGRATION_LOCKED, "another run holds the lock"), "Progressing", "InProgress"),
        (lambda s: set_phase(s, Phase.SUCCEEDED, "done"), "Healthy", "Current"),
        (lambda s: fail(s, Reason.SWAP_FAILED, "the swap failed"), "Degraded", "Failed"),
        (lambda s: (setattr(s, "phase", Phase.ROLLED_BACK), summarize(s, Reason.RECALL_DROPPED, "rolled back")),
         "Degraded", "Failed"),
    ],
    ids=["in-progress", "waiting-for-a-lock", "succeeded", "failed", "rolled-back-by-itself"],
)  # fmt: skip
def test_each_phase_reads_the_same_in_argo_cd_and_flux(arrange: Any, argo: str, flux: str) -> None:
    status = VectorMigrationStatus()
    set_phase(status, Phase.CHECKLIST, "starting")
    arrange(status)

    seen = as_resource(status)

    assert argo_health(seen)[0] == argo
    assert kstatus(seen) == flux
