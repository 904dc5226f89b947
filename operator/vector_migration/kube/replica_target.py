"""Replicate's other server under Kubernetes: its login from a Secret, and the ``<name>-target`` Secret it publishes.

The application learns where its database went from ``<name>-target``: the source Secret's keys
with the other server's place in them, published the moment the switchover is done. A rollback
that turns back writes the source's place into it again, so an application that follows it
follows the database back.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from ..api import VectorMigration, VectorMigrationStatus
from ..database.sql import ConnectionError_, ConnectionParams, params_from_secret
from ..engine.outcomes import Fail
from ..vocabulary import Reason
from .builders import LABEL_MIGRATION, labels, object_name
from .client import KubeClient, KubeError

# The reconciler's Secret reader: the decoded data, or the Fail a person fixes.
SecretReader = Callable[[KubeClient, str, str], Awaitable[dict[str, str] | Fail]]


async def target_server_login(
    client: KubeClient, resource: VectorMigration, namespace: str, ca_pem: str | None, secret: SecretReader
) -> ConnectionParams | Fail | None:
    """The other server's login (spec.replicate.target.secretRef), or None when the migration has none."""
    spec = resource.spec
    if spec.replicate.target is None:  # set only with strategy Replicate (the models' rule, the CRD's)
        return None
    name = spec.replicate.target.secret_ref.name
    data = await secret(client, namespace, name)
    if isinstance(data, Fail):
        return data
    if "password" not in data or not (data.get("username") or data.get("user") or data.get("uri")):
        return Fail(
            Reason.SECRET_UNAVAILABLE,
            f"secret {namespace}/{name} needs 'host', 'username' and 'password' (spec.replicate.target.secretRef)",
        )
    try:
        # Only the server and the login are read: CloudNativePG's superuser Secret names database '*'.
        return params_from_secret({**data, "dbname": "postgres"}, spec.database.ssl_mode, ca_pem)
    except ConnectionError_ as error:
        return Fail(Reason.SECRET_UNAVAILABLE, f"secret {namespace}/{name}: {error} (spec.replicate.target.secretRef)")


async def publish_target_secret(
    client: KubeClient, resource: VectorMigration, status: VectorMigrationStatus, target: ConnectionParams
) -> None:
    """``<name>-target`` names where the live database is: the other server once switched over, else the source.

    Nothing is published before the switchover; a rollback before it leaves none behind to correct.
    """
    replicate = status.replicate
    source_ref = resource.spec.database.secret_ref
    if replicate is None or replicate.endpoint is None or source_ref is None:
        return
    namespace = resource.metadata.namespace or "default"
    name = object_name(resource.metadata.name, "target")
    if not replicate.switched_over and await client.secret_data(namespace, name) is None:
        return
    source = await client.secret_data(namespace, source_ref.name)
    if source is None:
        raise KubeError(404, f"secret {namespace}/{source_ref.name} (spec.database.secretRef) is gone")
    data = (
        moved_credentials(source, target.host or "", target.port, replicate.target_database)
        if replicate.switched_over
        else source
    )
    await client.apply_secret(build_target_secret(resource, data), (LABEL_MIGRATION, resource.metadata.name))


# The keys of CloudNativePG's app Secret that name where the database is; the rest (user, password) are kept.
_URI_KEYS = ("uri", "fqdn-uri")
_JDBC_KEYS = ("jdbc-uri", "fqdn-jdbc-uri")


def moved_credentials(source: dict[str, str], host: str, port: int | None, database: str) -> dict[str, str]:
    """The source Secret's keys with the database's place changed to another server's (Replicate's target).

    The login stays the application's: its role exists on the other server (the checklist saw it),
    with the password the platform gave it there. A CA of the source's server is not the other's:
    ``ca.crt`` is left out.
    """
    port_text = str(port or 5432)
    moved: dict[str, str] = {}
    for key, value in source.items():
        if key == "ca.crt":
            continue
        if key == "host":
            moved[key] = host
        elif key == "port":
            moved[key] = port_text
        elif key == "dbname":
            moved[key] = database
        elif key in _URI_KEYS or key in _JDBC_KEYS:
            prefix = "jdbc:" if key in _JDBC_KEYS else ""
            parts = urllib.parse.urlsplit(value.removeprefix(prefix))
            login = parts.netloc.rpartition("@")[0]
            netloc = f"{login}@{host}:{port_text}" if login else f"{host}:{port_text}"
            path = "/" + urllib.parse.quote(database, safe="")
            moved[key] = prefix + urllib.parse.urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))
        elif key == "pgpass":
            user = source.get("username") or source.get("user") or "*"
            fields = (host, port_text, database, user, source.get("password", ""))
            moved[key] = ":".join(v.replace("\\", "\\\\").replace(":", "\\:") for v in fields) + "\n"
        else:
            moved[key] = value
    return moved


def build_target_secret(resource: VectorMigration, data: dict[str, str]) -> dict[str, Any]:
    """``<name>-target``: where the application connects once Replicate switched over to another server.

    Not owned by the resource: the application keeps reading it after the VectorMigration is deleted.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": object_name(resource.metadata.name, "target"),
            "namespace": resource.metadata.namespace,
            "labels": labels(resource, "target"),
        },
        # data, not stringData: what the API server stores and returns, so a re-run compares like with like
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())},
    }
