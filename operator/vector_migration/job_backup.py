"""The operator's backup runtime: a Kubernetes Job running pg_dump, read back from its termination message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .api import VectorMigration
from .backup import BackupError, BackupPending, BackupRequest, BackupResult
from .builders import build_backup_job, labels, object_name
from .kube import KubeClient, KubeError, path
from .sql import ConnectionParams

MIN_CLAIM_BYTES = 1 << 30


@dataclass
class JobBackup:
    """Creates the backup Job once (a deterministic name per plan), then reports on it."""

    client: KubeClient
    resource: VectorMigration
    secret_name: str

    async def backup(self, params: ConnectionParams, request: BackupRequest) -> BackupResult:
        """Start the Job, or read how it ended."""
        namespace = self.resource.metadata.namespace or "default"
        if params.password is None:
            raise BackupError(f"secret {self.secret_name} has no 'password' key, which the backup Job mounts")
        job = build_backup_job(
            self.resource,
            secret_name=self.secret_name,
            connection={
                "PGHOST": params.host or "",
                "PGPORT": str(params.port or ""),
                "PGDATABASE": params.dbname or "",
                "PGUSER": params.user or "",
                "PGSSLMODE": params.sslmode or "",
            },
            archive_name=request.archive_name,
            tables=request.tables,
            server_major=request.server_major,
            plan_hash=request.plan_hash,
        )
        name = job["metadata"]["name"]
        try:
            existing = await self.client.get(path("batch/v1", "jobs", namespace, name))
            if existing is None:
                if not self.resource.spec.backup.volume:
                    await self._ensure_claim(namespace, request.database_bytes)
                await self.client.create(path("batch/v1", "jobs", namespace), job)
                raise BackupPending(f"backup Job {name} started")
            return await self._result(namespace, name, existing)
        except KubeError as error:
            raise BackupError(f"backup Job {name}: {error}") from None

    async def _ensure_claim(self, namespace: str, database_bytes: int) -> None:
        """The default archive volume: a claim twice the database's size, not owned by the resource.

        Not owned, so the archive outlives the VectorMigration (unless ruvector.dev/delete-backup says otherwise).
        """
        size = max(MIN_CLAIM_BYTES, 2 * database_bytes)
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": object_name(self.resource.metadata.name, "backup"),
                "namespace": namespace,
                "labels": labels(self.resource, "backup"),
            },
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": str(size)}}},
        }
        await self.client.create(path("v1", "persistentvolumeclaims", namespace), claim)

    async def _result(self, namespace: str, name: str, job: dict[str, Any]) -> BackupResult:
        status: dict[str, Any] = job.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Failed" and condition.get("status") == "True":
                raise BackupError(
                    f"backup Job {name} failed ({condition.get('reason', 'Failed')}): {condition.get('message', '')}"
                )
        if status.get("failed"):
            raise BackupError(f"backup Job {name} failed")
        if not status.get("succeeded"):
            raise BackupPending(f"backup Job {name} is running")
        pods = await self.client.list(path("v1", "pods", namespace), label_selector=f"job-name={name}")
        for pod in pods:
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                message = ((container.get("state") or {}).get("terminated") or {}).get("message")
                if message:
                    report = json.loads(message)
                    claim = self._volume_description()
                    return BackupResult(
                        location=f"{claim}/{PurePosixPath(report['location']).name}",
                        size_bytes=int(report["sizeBytes"]),
                        sha256=str(report["sha256"]),
                        table_entries=(),
                    )
        raise BackupError(f"backup Job {name} succeeded but its pod reported no archive")

    def _volume_description(self) -> str:
        volume = self.resource.spec.backup.volume
        if not volume:
            return f"pvc/{object_name(self.resource.metadata.name, 'backup')}"
        kind = next(iter(volume))
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        return f"pvc/{claim}" if claim else kind
