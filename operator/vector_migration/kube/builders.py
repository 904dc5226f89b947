"""Kubernetes objects the operator creates, as pure functions of the resource: tested as data.

Names are deterministic (derived from the resource and the plan), so creating them again after
a restart finds the existing object instead of making a second one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..api import JobDefaults, VectorMigration, VectorMigrationStatus
from ..database.backup import restore_arguments
from ..database.sql import conninfo_value
from ..engine.plan import stages
from ..vocabulary import API_GROUP, API_VERSION, KIND, BackupScope, Phase
from .job_pod import job_placement, pod_metadata, pod_security, resources

MANAGED_BY = "vector-migration-operator"
LABEL_MIGRATION = f"{API_GROUP}/migration"
LABEL_COMPONENT = "app.kubernetes.io/component"

# Paths inside the backup container; the script reads them from the environment, never from argv.
PASSWORD_DIR = "/var/run/secrets/database"  # noqa: S105 - a mount path, not a password
CA_DIR = "/var/run/secrets/database-ca"  # the database server's CA, when one is given
TARGET_PASSWORD_DIR = "/var/run/secrets/target-database"  # noqa: S105 - Replicate's other server's login
BACKUP_DIR = "/backup"
SCRATCH_DIR = "/tmp"  # noqa: S108 - an emptyDir, because the root filesystem is read-only

# Every script starts by turning the Secret's password key, mounted as a file, into a libpq
# password file (sed escapes what the format reserves; no argv, no environment variable carries it).
# A login without a password (trust, certificates) mounts none.
_WRITE_PGPASS = r"""set -eu
umask 077
if [ -f "$PASSWORD_DIR/password" ]; then
  { printf '*:*:*:*:'; sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$PASSWORD_DIR/password"; echo; } > "$SCRATCH_DIR/pgpass"
  export PGPASSFILE="$SCRATCH_DIR/pgpass"
fi
"""

# The backup container's script: the archive is written under a .partial name; its table of
# contents must list TABLE DATA for every vector table, and every data block must read back to the
# end (a cut archive keeps its table of contents, which is written first); only then is it renamed
# to its final name. Size and sha256 go to the termination message.
BACKUP_SCRIPT = (
    _WRITE_PGPASS
    + r"""pg_dump --format=custom --no-password --file="$BACKUP_DIR/$ARCHIVE.partial" "$@"
pg_restore --list "$BACKUP_DIR/$ARCHIVE.partial" > "$SCRATCH_DIR/toc"
printf '%s\n' "$EXPECTED_TABLES" | while IFS= read -r table; do
  [ -z "$table" ] || grep -qF " TABLE DATA $table " "$SCRATCH_DIR/toc" || {
    echo "archive has no TABLE DATA for $table" >&2; exit 3; }
done
pg_restore --file=/dev/null "$BACKUP_DIR/$ARCHIVE.partial"
mv "$BACKUP_DIR/$ARCHIVE.partial" "$BACKUP_DIR/$ARCHIVE"
size=$(wc -c < "$BACKUP_DIR/$ARCHIVE" | tr -d ' ')
sum=$(sha256sum "$BACKUP_DIR/$ARCHIVE" | cut -d ' ' -f 1)
printf '{"location":"%s","sizeBytes":%s,"sha256":"%s"}' "$BACKUP_DIR/$ARCHIVE" "$size" "$sum" > "$TERMINATION_LOG"
"""
)

# The restore container's script: the archive must still be the verified one (sha256), then
# pg_restore runs with the options in "$@" (backup.restore_arguments: one transaction, clean).
RESTORE_SCRIPT = (
    _WRITE_PGPASS
    + r"""archive="$BACKUP_DIR/$ARCHIVE"
[ -f "$archive" ] || { echo "archive $archive is gone" >&2; exit 2; }
sum=$(sha256sum "$archive" | cut -d ' ' -f 1)
[ "$sum" = "$EXPECTED_SHA256" ] || {
  echo "archive $archive changed since it was verified (sha256 differs); not restoring it" >&2; exit 3; }
pg_restore "$@" --dbname="$PGDATABASE" "$archive"
printf '{"restored":"%s","sha256":"%s"}' "$archive" "$sum" > "$TERMINATION_LOG"
"""
)

# The schema container's script (strategy Replicate): the source's schema, without subscriptions,
# restored into the new, empty database an object at a time (database.backup.copy_schema says why).
# $TARGET_CONNINFO names the new database as a connection string ("dbname='…'"), so no database name
# is ever read as one.
SCHEMA_SCRIPT = (
    _WRITE_PGPASS
    + r"""pg_dump --schema-only --no-subscriptions --format=custom --no-password --file="$SCRATCH_DIR/schema.dump"
if [ -n "${TARGET_PASSWORD_DIR:-}" ]; then  # another server (replicate.target): its own login
  PGPASSFILE="$SCRATCH_DIR/target-pgpass"
  { printf '*:*:*:*:'; sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$TARGET_PASSWORD_DIR/password"; echo; } > "$PGPASSFILE"
fi
pg_restore --exit-on-error --no-password --dbname="$TARGET_CONNINFO" "$SCRATCH_DIR/schema.dump"
printf '{"copied":"%s"}' "$TARGET_DATABASE" > "$TERMINATION_LOG"
"""
)

RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def object_name(resource_name: str, suffix: str) -> str:
    """A DNS-1123 name for a child object, at most 63 characters, stable for the same inputs."""
    name = f"{resource_name}-{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: 63 - len(suffix) - 10].rstrip('-')}-{digest}-{suffix}"


def labels(resource: VectorMigration, component: str) -> dict[str, str]:
    """Labels every child carries, so `kubectl get jobs -l ruvector.dev/migration=NAME` finds them."""
    return {
        "app.kubernetes.io/name": "vector-migration",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_MIGRATION: resource.metadata.name,
    }


def owner_reference(resource: VectorMigration) -> dict[str, Any]:
    """Makes the child garbage-collected with the resource."""
    uid = resource.metadata.uid
    if not uid:
        raise ValueError("the resource has no metadata.uid (was it read from the API server?)")
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": resource.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def backup_volume(resource: VectorMigration) -> dict[str, Any]:
    """The volume the archive is written to: the spec's, else a claim named after the resource."""
    if resource.spec.backup.volume:
        return dict(resource.spec.backup.volume)
    return {"persistentVolumeClaim": {"claimName": object_name(resource.metadata.name, "backup")}}


def build_backup_job(
    resource: VectorMigration,
    *,
    defaults: JobDefaults | None = None,
    ca: tuple[str, str] | None = None,
    secret_name: str | None,
    connection: dict[str, str],
    archive_name: str,
    tables: list[tuple[str, str]],
    server_major: int,
    plan_hash: str,
    partitioned: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The Job that dumps the database and checks the archive (``tables`` each with its rows)."""
    spec = resource.spec
    pattern_args = (
        [f"--table={_pattern(schema)}.{_pattern(table)}" for schema, table in [*partitioned, *tables]]
        if spec.backup.scope is BackupScope.VECTOR_TABLES
        else []
    )
    return _database_job(
        resource,
        component="backup",
        name=object_name(resource.metadata.name, f"backup-{plan_hash.removeprefix('sha256:')[:8]}"),
        container="pg-dump",
        image=_image(resource, defaults or JobDefaults(), server_major),
        defaults=defaults or JobDefaults(),
        ca=ca,
        command=["/bin/sh", "-c", BACKUP_SCRIPT, "backup", *pattern_args],
        env={
            **connection,
            "ARCHIVE": archive_name,
            "EXPECTED_TABLES": "".join(f"{schema} {table}\n" for schema, table in tables),
        },
        secret_name=secret_name,
        archive_read_only=False,
    )


def build_restore_job(
    resource: VectorMigration,
    *,
    defaults: JobDefaults | None = None,
    ca: tuple[str, str] | None = None,
    secret_name: str | None,
    connection: dict[str, str],
    archive_name: str,
    sha256: str,
    server_major: int,
    keep_schema: str,
) -> dict[str, Any]:
    """The Job that restores a verified archive in one transaction (the rollback of last resort)."""
    return _database_job(
        resource,
        component="restore",
        name=object_name(resource.metadata.name, f"restore-{sha256[:8]}"),
        container="pg-restore",
        image=_image(resource, defaults or JobDefaults(), server_major),
        defaults=defaults or JobDefaults(),
        ca=ca,
        command=["/bin/sh", "-c", RESTORE_SCRIPT, "restore", *restore_arguments(keep_schema)],
        env={**connection, "ARCHIVE": archive_name, "EXPECTED_SHA256": sha256},
        secret_name=secret_name,
        archive_read_only=True,  # a restore only reads the archive: it cannot damage the one copy
    )


def build_schema_job(
    resource: VectorMigration,
    *,
    defaults: JobDefaults | None = None,
    ca: tuple[str, str] | None = None,
    secret_name: str | None,
    connection: dict[str, str],
    target_database: str,
    server_major: int,
    plan_hash: str,
    target: TargetServer | None = None,
) -> dict[str, Any]:
    """The Job that copies the source's schema into Replicate's new database (no archive volume).

    With ``target`` (replicate.target) the restore logs in to the other server with its Secret's
    password, mounted like the source's.
    """
    where = {} if target is None else {"host": target.host, "port": target.port, "user": target.user}
    conninfo = " ".join(f"{key}={conninfo_value(value)}" for key, value in where.items() if value)
    return _database_job(
        resource,
        component="schema",
        name=object_name(resource.metadata.name, f"schema-{plan_hash.removeprefix('sha256:')[:8]}"),
        container="pg-schema",
        image=_image(resource, defaults or JobDefaults(), server_major),
        defaults=defaults or JobDefaults(),
        ca=ca,
        command=["/bin/sh", "-c", SCHEMA_SCRIPT, "schema"],
        env={
            **connection,
            "TARGET_DATABASE": target_database,
            "TARGET_CONNINFO": f"{conninfo} dbname={conninfo_value(target_database)}".strip(),
        },
        secret_name=secret_name,
        archive_read_only=None,
        target_secret_name=target.secret_name if target is not None else None,
    )


@dataclass(frozen=True)
class TargetServer:
    """Replicate's other server as a Job reaches it: its address, login, and the Secret with the password."""

    secret_name: str
    host: str
    port: str
    user: str


def _image(resource: VectorMigration, defaults: JobDefaults, server_major: int) -> str:
    """The spec's image, else PostgreSQL's client image for the server's major version from the default repository."""
    return resource.spec.backup.image or f"{defaults.image_repository}:{server_major}"


# size: a Job manifest declared as data
def _database_job(
    resource: VectorMigration,
    *,
    component: str,
    name: str,
    container: str,
    image: str,
    defaults: JobDefaults,
    ca: tuple[str, str] | None,
    command: list[str],
    env: dict[str, str],
    secret_name: str | None,
    archive_read_only: bool | None,
    target_secret_name: str | None = None,
) -> dict[str, Any]:
    """A Job that runs one PostgreSQL client script against the database, restricted and once.

    ``archive_read_only`` None: the Job touches no archive, and the backup volume is not mounted.
    """
    archive_mounts = (
        []
        if archive_read_only is None
        else [{"name": "backup", "mountPath": BACKUP_DIR, "readOnly": archive_read_only}]
    )
    archive_volumes = [] if archive_read_only is None else [{"name": "backup", **backup_volume(resource)}]
    if ca is not None:
        env = {**env, "PGSSLROOTCERT": f"{CA_DIR}/ca.crt"}  # libpq verifies the server against it
    variables = [{"name": key, "value": value} for key, value in sorted(env.items()) if value]
    variables += [
        {"name": "PASSWORD_DIR", "value": PASSWORD_DIR},
        *([{"name": "TARGET_PASSWORD_DIR", "value": TARGET_PASSWORD_DIR}] if target_secret_name else []),
        {"name": "BACKUP_DIR", "value": BACKUP_DIR},
        {"name": "SCRATCH_DIR", "value": SCRATCH_DIR},
        {"name": "TERMINATION_LOG", "value": "/dev/termination-log"},
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": resource.metadata.namespace,
            "labels": labels(resource, component),
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": {
            "backoffLimit": 0,  # a failed dump or restore is not fixed by running it again unchanged
            "activeDeadlineSeconds": 6 * 3600,  # one that hangs must end as a failure someone sees
            "ttlSecondsAfterFinished": 7 * 24 * 3600,  # the Job (not the archive) is kept a week for inspection
            "template": {
                "metadata": pod_metadata(labels(resource, component), defaults),
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    **job_placement(resource.spec.backup, defaults),
                    "securityContext": pod_security(defaults),
                    "containers": [
                        {
                            "name": container,
                            "image": image,
                            "command": command,
                            "env": variables,
                            "securityContext": RESTRICTED_CONTAINER_SECURITY,
                            "terminationMessagePolicy": "File",
                            **resources(resource.spec.backup, defaults),
                            "volumeMounts": [
                                *archive_mounts,
                                {"name": "scratch", "mountPath": SCRATCH_DIR},
                                *_password_mounts(secret_name),
                                *_target_mounts(target_secret_name),
                                *_ca_mounts(ca),
                            ],
                        }
                    ],
                    "volumes": [
                        *archive_volumes,
                        {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
                        *_password_volumes(secret_name),
                        *_target_volumes(target_secret_name),
                        *_ca_volumes(ca),
                    ],
                },
            },
        },
    }


def _password_mounts(secret_name: str | None) -> list[dict[str, Any]]:
    return [] if secret_name is None else [{"name": "database-password", "mountPath": PASSWORD_DIR, "readOnly": True}]


def _password_volumes(secret_name: str | None) -> list[dict[str, Any]]:
    """The login's password, the key ``password`` of ``secret_name`` (None: a login without one)."""
    if secret_name is None:
        return []
    items = [{"key": "password", "path": "password"}]
    return [{"name": "database-password", "secret": {"secretName": secret_name, "items": items, "defaultMode": 0o400}}]


def _target_mounts(secret_name: str | None) -> list[dict[str, Any]]:
    return (
        [] if secret_name is None else [{"name": "target-password", "mountPath": TARGET_PASSWORD_DIR, "readOnly": True}]
    )


def _target_volumes(secret_name: str | None) -> list[dict[str, Any]]:
    if secret_name is None:
        return []
    items = [{"key": "password", "path": "password"}]
    return [{"name": "target-password", "secret": {"secretName": secret_name, "items": items, "defaultMode": 0o400}}]


def _ca_mounts(ca: tuple[str, str] | None) -> list[dict[str, Any]]:
    return [] if ca is None else [{"name": "database-ca", "mountPath": CA_DIR, "readOnly": True}]


def _ca_volumes(ca: tuple[str, str] | None) -> list[dict[str, Any]]:
    """The CA's key of its Secret as the file ca.crt (a certificate, not a secret: readable by the group)."""
    if ca is None:
        return []
    secret, key = ca
    items = [{"key": key, "path": "ca.crt"}]
    return [{"name": "database-ca", "secret": {"secretName": secret, "items": items, "defaultMode": 0o444}}]


def build_plan_configmap(resource: VectorMigration, plan: dict[str, Any]) -> dict[str, Any]:
    """The full plan for a person to review before approving its hash."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": object_name(resource.metadata.name, "plan"),
            "namespace": resource.metadata.namespace,
            "labels": labels(resource, "plan"),
            "annotations": {f"{API_GROUP}/plan-hash": str(plan.get("planHash", ""))},
            "ownerReferences": [owner_reference(resource)],
        },
        "data": {
            "planHash": str(plan.get("planHash", "")),
            "plan.json": json.dumps(plan, indent=2, sort_keys=True),
            "statements.sql": "\n".join(
                f"-- {stage}\n" + "\n".join(f"-- {s['step']}\n{s['sql']};" for s in statements)
                for stage, statements in stages(plan)
            )
            + "\n",
        },
    }


def build_cutover_configmap(resource: VectorMigration, status: VectorMigrationStatus) -> dict[str, Any]:
    """What applications (or a proxy) read to route a share of reads to the new tables.

    ``weight`` is the percentage of reads to send to the new tables; ``tables`` maps each
    application table to the table that holds its migrated copy until the finalize (after it, or
    after a rollback, the application's own name; a rollback's weight is 0).
    """
    cutover = status.cutover
    parallel = status.parallel
    finalized = status.phase is Phase.SUCCEEDED
    # finalized or rolled back, the shadows are gone: every read goes to the application's own names
    settled = finalized or status.phase is Phase.ROLLED_BACK
    tables = {t.name: (t.name if settled else t.shadow) for t in (parallel.tables if parallel else [])}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": object_name(resource.metadata.name, "cutover"),
            "namespace": resource.metadata.namespace,
            "labels": labels(resource, "cutover"),
            "ownerReferences": [owner_reference(resource)],
        },
        "data": {
            "weight": str(100 if finalized else (cutover.weight if cutover else 0)),
            "step": str(cutover.step if cutover else 0),
            "phase": status.phase.value,
            "tables.json": json.dumps(tables, sort_keys=True),
        },
    }


# The API server keeps an object, a ConfigMap's data included, within 1 MiB: a report larger than
# this shows fewer rows per table (counting the rest), and one still larger is replaced by a page
# that says how to make the whole one.
REPORT_BYTES_LIMIT = 900 * 1024
# Rows per table and list when the whole report does not fit (thousands of tables): None is all.
REPORT_ROWS_SHOWN = (None, 200, 20)


def build_report_configmap(resource: VectorMigration, status: VectorMigrationStatus) -> dict[str, Any]:
    """The migration report (report.py's page) where on-call finds it: ``<name>-report``, key ``report.html``."""
    from ..report import pointer_page, render_report  # pygal: loaded to write a report, never by an idle operator

    name, namespace = resource.metadata.name, resource.metadata.namespace
    command = f"kubectl vmig report {name} -n {namespace} -o report.html"
    for rows_shown in REPORT_ROWS_SHOWN:  # the whole page, else fewer rows per table until it fits
        page = render_report(status, f"{namespace}/{name}", rows_shown, command)
        if len(page.encode()) <= REPORT_BYTES_LIMIT:
            break
    else:
        page = pointer_page(name, command)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": object_name(name, "report"),
            "namespace": namespace,
            "labels": labels(resource, "report"),
            "ownerReferences": [owner_reference(resource)],
        },
        "data": {"report.html": page, "phase": status.phase.value},
    }


def _pattern(name: str) -> str:
    """A pg_dump --table pattern matching exactly this name: quoted, so wildcards are literal."""
    return '"' + name.replace('"', '""') + '"'


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(name: str) -> bool:
    """Whether a name is a valid DNS-1123 label (what Job and ConfigMap names must be)."""
    return len(name) <= 63 and bool(_DNS_LABEL.match(name))
