"""The database login a VectorMigration names: its Secret, the server's CA, and the admin login.

Each is read from the API when a run is prepared; a missing Secret or key is a failure a person
fixes (named), and a transient answer from the API server is raised for the handler to retry.
"""

from __future__ import annotations

from ..api import VectorMigration
from ..database.sql import ConnectionParams
from ..engine.outcomes import Fail
from ..vocabulary import Reason
from .client import KubeClient, KubeError


async def admin_login(
    client: KubeClient, namespace: str, name: str, params: ConnectionParams
) -> ConnectionParams | Fail:
    """spec.database.adminSecretRef's login, to the same server as ``params``."""
    credentials = await secret_data(client, namespace, name)
    if isinstance(credentials, Fail):
        return credentials
    user = credentials.get("username") or credentials.get("user")
    if not user or "password" not in credentials:
        return Fail(
            Reason.SECRET_UNAVAILABLE,
            f"secret {namespace}/{name} needs 'username' and 'password' (spec.database.adminSecretRef)",
        )
    return params.with_login(user, credentials["password"])


async def secret_data(client: KubeClient, namespace: str, name: str) -> dict[str, str] | Fail:
    """A Secret's decoded data, or the failure a person fixes; a transient answer raises (the handler retries)."""
    try:
        data = await client.secret_data(namespace, name)
    except KubeError as error:
        if error.transient:
            raise
        return Fail(Reason.SECRET_UNAVAILABLE, f"cannot read secret {namespace}/{name}: {error}")
    if data is None:
        return Fail(Reason.SECRET_UNAVAILABLE, f"secret {namespace}/{name} does not exist")
    return data


async def ca_certificate(
    client: KubeClient, namespace: str, ca: tuple[str, str] | None, secret_name: str, credentials: dict[str, str]
) -> str | Fail | None:
    """The CA's PEM from its (Secret, key): the credentials' own Secret, or another; None without a CA."""
    if ca is None:
        return None
    holder = credentials if ca[0] == secret_name else await secret_data(client, namespace, ca[0])
    if isinstance(holder, Fail):
        return holder
    if ca[1] not in holder:
        return Fail(
            Reason.SECRET_UNAVAILABLE, f"secret {namespace}/{ca[0]} has no key {ca[1]!r} (spec.database.caSecretRef)"
        )
    return holder[ca[1]]


def ca_source(resource: VectorMigration, credentials: dict[str, str]) -> tuple[str, str] | None:
    """(Secret, key) of the server's CA: spec.database.caSecretRef, else the credentials' own ca.crt."""
    database = resource.spec.database
    if database.ca_secret_ref is not None:
        return database.ca_secret_ref.name, database.ca_secret_ref.key
    if "ca.crt" in credentials and database.secret_ref is not None:
        return database.secret_ref.name, "ca.crt"
    return None
