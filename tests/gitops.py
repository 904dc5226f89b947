"""How GitOps tools and kubectl read a VectorMigration's status: run on the statuses the operator writes."""

from __future__ import annotations

from typing import Any

import lupa

from tests.chart import ROOT

GITOPS = ROOT / "deploy" / "gitops"


def argo_health(resource: dict[str, Any]) -> tuple[str, str]:
    """Argo CD's verdict: the health check's Lua, run by a Lua interpreter as Argo CD runs it."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    check = lua.eval("function(obj)\n" + (GITOPS / "argocd-health.lua").read_text() + "\nend")
    result = check(lua.table_from(resource, recursive=True))
    return str(result["status"]), str(result["message"])


def kstatus(resource: dict[str, Any]) -> str:
    """Flux's verdict for a custom resource: the kstatus rules (cli-utils pkg/kstatus, generic resources)."""
    meta, status = resource.get("metadata") or {}, resource.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    observed = status.get("observedGeneration")
    if observed is not None and meta.get("generation") is not None and observed != meta["generation"]:
        return "InProgress"
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    if conditions.get("Reconciling", {}).get("status") == "True":
        return "InProgress"
    if conditions.get("Stalled", {}).get("status") == "True":
        return "Failed"
    ready = conditions.get("Ready")
    if ready is not None and ready.get("status") != "True":
        return "InProgress"
    return "Current"


def kubectl_wait_ready(resource: dict[str, Any]) -> bool:
    """Whether `kubectl wait --for=condition=Ready` returns for this object."""
    conditions = (resource.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
