"""The operator's backup runtime: Jobs running pg_dump or pg_restore, read back from their termination message."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..api import JobDefaults, VectorMigration
from ..database.backup import (
    BackupError,
    BackupPending,
    BackupRequest,
    BackupResult,
    RestoreRequest,
    SchemaCopyRequest,
)
from ..database.sql import ConnectionParams
from .builders import (
    LABEL_MIGRATION,
    TargetServer,
    build_backup_job,
    build_restore_job,
    build_schema_job,
    labels,
    object_name,
    owner_reference,
)
from .client import KubeClient, KubeError

MIN_CLAIM_BYTES = 1 << 30


def build_password_secret(resource: VectorMigration, password: str) -> dict[str, Any]:
    """``<name>-database-password``: the password alone, for the Jobs to mount, when the Secret has only a URI.

    Owned by the resource, so it goes with it; never logged (the client's messages name Secrets, not data).
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": object_name(resource.metadata.name, "database-password"),
            "namespace": resource.metadata.namespace,
            "labels": labels(resource, "database-password"),
            "ownerReferences": [owner_reference(resource)],
        },
        "data": {"password": base64.b64encode(password.encode()).decode()},
    }


@dataclass
class JobBackup:
    """Creates the backup Job once (a deterministic name per plan), then reports on it."""

    client: KubeClient
    resource: VectorMigration
    secret_name: str
    defaults: JobDefaults = field(default_factory=JobDefaults)
    ca: tuple[str, str] | None = None  # (Secret, key) of the database server's CA, mounted for libpq
    # spec.database.adminSecretRef: the restore re-creates extensions, which the application may not
    admin_secret_name: str | None = None
    # spec.replicate.target.secretRef: the other server's login, for Replicate's schema copy
    target_secret_name: str | None = None
    # whether secret_name's Secret has a `password` key (a `uri`-only one has it inside the URI);
    # the admin's always has one (the reconciler requires it)
    secret_has_password: bool = True
    runs_here: bool = False  # a Job goes on when the operator restarts, and says how it ended

    async def backup(self, params: ConnectionParams, request: BackupRequest) -> BackupResult:
        """Start the Job, or read how it ended."""
        mounted, ours = self._password_mount(params)
        job = build_backup_job(
            self.resource,
            defaults=self.defaults,
            ca=self.ca,
            secret_name=mounted,
            connection=self._connection(params),
            archive_name=request.archive_name,
            tables=request.tables,
            partitioned=request.partitioned,
            server_major=request.server_major,
            plan_hash=request.plan_hash,
        )
        report = await self._run_job("backup", job, request.database_bytes, ours)
        return BackupResult(
            location=f"{self._volume_description()}/{PurePosixPath(report['location']).name}",
            size_bytes=int(report["sizeBytes"]),
            sha256=str(report["sha256"]),
            table_entries=(),
        )

    async def restore(self, params: ConnectionParams, request: RestoreRequest) -> None:
        """Start the restore Job (once per archive: backoffLimit 0), or read how it ended."""
        mounted, ours = self._login_password_mount(params)
        job = build_restore_job(
            self.resource,
            defaults=self.defaults,
            ca=self.ca,
            secret_name=mounted,
            connection=self._connection(params),
            archive_name=PurePosixPath(request.location).name,
            sha256=request.sha256,
            server_major=request.server_major,
            keep_schema=request.keep_schema,
        )
        await self._run_job("restore", job, None, ours)

    async def copy_schema(
        self, params: ConnectionParams, request: SchemaCopyRequest, target: ConnectionParams | None = None
    ) -> None:
        """Start the schema Job (once per plan), or read how it ended; as the admin login when there is one."""
        elsewhere: TargetServer | None = None
        if target is not None and (target.host, target.port) != (params.host, params.port):
            if self.target_secret_name is None or target.password is None:
                raise BackupError("replicate.target: its Secret's 'password' is needed for the schema copy")
            port = str(target.port) if target.port else ""
            elsewhere = TargetServer(self.target_secret_name, target.host or "", port, target.user or "")
        mounted, ours = self._login_password_mount(params)
        job = build_schema_job(
            self.resource,
            defaults=self.defaults,
            ca=self.ca,
            secret_name=mounted,
            connection=self._connection(params.with_database(request.source_database)),
            target_database=request.target_database,
            server_major=request.server_major,
            plan_hash=request.plan_hash,
            target=elsewhere,
        )
        await self._run_job("schema", job, None, ours)

    def _connection(self, params: ConnectionParams) -> dict[str, str]:
        # The operator's own file paths mean nothing in the Job's pod: its CA is mounted (ca).
        return {key: value for key, value in params.libpq_environment(None).items() if key != "PGSSLROOTCERT"}

    def _login_password_mount(self, params: ConnectionParams) -> tuple[str | None, dict[str, Any] | None]:
        """The password mount of the login a restore or schema copy runs as: the admin's when there is one."""
        if self.admin_secret_name is not None:
            return self.admin_secret_name, None
        return self._password_mount(params)

    def _password_mount(self, params: ConnectionParams) -> tuple[str | None, dict[str, Any] | None]:
        """The Secret whose key ``password`` the Job mounts, and the Secret of ours to write first, if any.

        A Secret with only a ``uri`` (as the quick start creates) has the password inside the URI,
        which a Job's shell cannot take apart safely; the operator, which has parsed it, writes it
        alone to ``<name>-database-password`` (owned by the resource). None: the login has no password.
        """
        if params.password is None:
            return None, None
        if self.secret_has_password:
            return self.secret_name, None
        ours = build_password_secret(self.resource, params.password)
        return str(ours["metadata"]["name"]), ours

    async def _run_job(
        self, what: str, job: dict[str, Any], claim_bytes: int | None, password_secret: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Create the Job if it does not exist (first the Secret it mounts, when ours); its report once it succeeded."""
        namespace = self.resource.metadata.namespace or "default"
        name = job["metadata"]["name"]
        try:
            existing = await self.client.read_job(namespace, name)
            if existing is None:
                if claim_bytes is not None and not self.resource.spec.backup.volume:
                    await self._ensure_claim(namespace, claim_bytes)
                if password_secret is not None:
                    await self.client.apply_secret(password_secret, (LABEL_MIGRATION, self.resource.metadata.name))
                await self.client.create_job(job)
                raise BackupPending(f"{what} Job {name} started")
            return await self._report(what, namespace, name, existing)
        except KubeError as error:
            if error.transient:  # the API server said "not now": the next reconciliation asks again
                raise BackupPending(f"{what} Job {name}: {error}; trying again") from None
            raise BackupError(f"{what} Job {name}: {error}") from None

    async def _ensure_claim(self, namespace: str, database_bytes: int) -> None:
        """The default archive volume: a claim twice the database's size, not owned by the resource.

        Not owned, so the archive outlives the VectorMigration (unless ruvector.dev/delete-backup says otherwise).
        """
        size = max(MIN_CLAIM_BYTES, 2 * database_bytes)
        spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": str(size)}}}
        if self.defaults.storage_class_name:
            spec["storageClassName"] = self.defaults.storage_class_name
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": object_name(self.resource.metadata.name, "backup"),
                "namespace": namespace,
                "labels": labels(self.resource, "backup"),
            },
            "spec": spec,
        }
        await self.client.create_claim(claim)

    async def _report(self, what: str, namespace: str, name: str, job: dict[str, Any]) -> dict[str, Any]:
        status: dict[str, Any] = job.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Failed" and condition.get("status") == "True":
                raise BackupError(
                    f"{what} Job {name} failed ({condition.get('reason', 'Failed')}): {condition.get('message', '')}"
                )
        if status.get("failed"):
            raise BackupError(f"{what} Job {name} failed")
        if not status.get("succeeded"):
            raise BackupPending(f"{what} Job {name} is running")
        pods = await self.client.list_pods(namespace, f"job-name={name}")
        for pod in pods:
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                message = ((container.get("state") or {}).get("terminated") or {}).get("message")
                if message:
                    report: dict[str, Any] = json.loads(message)
                    return report
        raise BackupError(f"{what} Job {name} succeeded but its pod reported nothing")

    def _volume_description(self) -> str:
        volume = self.resource.spec.backup.volume
        if not volume:
            return f"pvc/{object_name(self.resource.metadata.name, 'backup')}"
        kind = next(iter(volume))
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        return f"pvc/{claim}" if claim else kind
