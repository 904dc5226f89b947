"""What a backup or restore Job's pod is given: from its VectorMigration's spec.backup, else the chart's jobs.*."""

from __future__ import annotations

from typing import Any

from ..api import JobDefaults, JobPlacement


def job_placement(spec: JobPlacement, defaults: JobPlacement) -> dict[str, Any]:
    """The pod fields a Job's placement sets: each from the spec when it says, else the operator's default."""
    placement: dict[str, Any] = {}
    node_selector = spec.node_selector if spec.node_selector is not None else defaults.node_selector
    if node_selector:
        placement["nodeSelector"] = dict(node_selector)
    tolerations = spec.tolerations if spec.tolerations is not None else defaults.tolerations
    if tolerations:
        placement["tolerations"] = [dict(toleration) for toleration in tolerations]
    pull_secrets = spec.image_pull_secrets if spec.image_pull_secrets is not None else defaults.image_pull_secrets
    if pull_secrets:
        placement["imagePullSecrets"] = [{"name": secret.name} for secret in pull_secrets]
    return placement


def pod_metadata(own_labels: dict[str, str], defaults: JobDefaults) -> dict[str, Any]:
    """The Job pod's labels (the chart's, then the operator's own, which win) and the chart's annotations."""
    metadata: dict[str, Any] = {"labels": {**defaults.pod_labels, **own_labels}}
    if defaults.pod_annotations:
        metadata["annotations"] = dict(defaults.pod_annotations)
    return metadata


def pod_security(defaults: JobDefaults) -> dict[str, Any]:
    """Restricted, with the chart's UID, GID and fsGroup (999), or none where the platform assigns them."""
    uid = defaults.run_as_user
    ids = {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid} if uid is not None else {}
    return {"runAsNonRoot": True, **ids, "seccompProfile": {"type": "RuntimeDefault"}}


def resources(spec: JobPlacement, defaults: JobPlacement) -> dict[str, Any]:
    """The container's requests and limits: the spec's, else the chart's."""
    resources = spec.resources if spec.resources is not None else defaults.resources
    return {"resources": dict(resources)} if resources else {}
