"""The operator's own Kubernetes API calls, through the official ``kubernetes`` client.

kopf watches the resources and posts Events; everything else the operator does itself (Secrets,
Jobs, Pods, ConfigMaps, PersistentVolumeClaims, status writes) goes through the official client,
logged in by its own loaders: in a pod the service account (the projected token is read again
as the kubelet rotates it, ``ca.crt`` by path), elsewhere a kubeconfig (CA data or file, client
certificates, exec plugins and auth providers with their token refresh).

The official client is synchronous (urllib3), so each call runs in a worker thread and kopf's
event loop never blocks on the network. Reads and writes return plain dicts (the JSON as the API
server sent it); a read of what does not exist returns None; a create of what exists returns the
existing object, so a restart re-creates safely.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.incluster_config import InClusterConfigLoader

from .. import __version__
from ..vocabulary import API_GROUP, API_VERSION, PLURAL

# Answers that say "not now" rather than "no": a conflict, throttling, an overloaded or restarting
# API server, or no answer at all (status 0). The same call made again later can succeed.
TRANSIENT_STATUSES = frozenset({0, 409, 429, 500, 502, 503, 504})

# Where the kubelet mounts a pod's service account (token, ca.crt, namespace).
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# How often the service-account token file is read again. The kubelet rotates projected tokens
# well before they expire (at 80 % of an hour by default); client-go re-reads each minute, as does
# the official Python client. It has no public setting for this, hence the private attribute below.
TOKEN_REREAD = datetime.timedelta(minutes=1)
# (connect, read) seconds for every call: an API server that does not answer is "not now" within
# seconds, rather than a reconciliation hanging on a dead connection.
REQUEST_TIMEOUT = (5.0, 30.0)
MERGE_PATCH = "application/merge-patch+json"


class KubeError(RuntimeError):
    """An API call failed; the message carries the status and the server's reason, no bodies."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Whether retrying the same call later may succeed (else a person must change something)."""
        return self.status in TRANSIENT_STATUSES


class LoginError(RuntimeError):
    """Neither a service account nor a kubeconfig gave credentials."""


def in_cluster_configuration(
    service_account: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] = os.environ,
    token_reread: datetime.timedelta = TOKEN_REREAD,
) -> k8s.Configuration:
    """The service account's login, as the official client does it in a pod."""
    loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
        token_filename=str(service_account / "token"),
        cert_filename=str(service_account / "ca.crt"),
        try_refresh_token=True,
        environ=environ,
    )
    loader._token_refresh_period = token_reread
    configuration = k8s.Configuration()
    loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    return configuration


def kubeconfig_configuration(path: str | None = None, context: str | None = None) -> k8s.Configuration:
    """A kubeconfig's login (KUBECONFIG or ~/.kube/config unless given), by the official loader."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=path, context=context, client_configuration=configuration, persist_config=False
    )
    return configuration


def load_configuration(
    service_account: Path = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] = os.environ
) -> k8s.Configuration:
    """In a pod the service account; elsewhere the kubeconfig (kubectl's order of preference)."""
    try:
        return in_cluster_configuration(service_account, environ)
    except k8s_config.ConfigException as in_cluster:
        try:
            return kubeconfig_configuration(environ.get("KUBECONFIG"))
        except k8s_config.ConfigException as kubeconfig:
            raise LoginError(f"no service account ({in_cluster}) and no usable kubeconfig ({kubeconfig})") from None


def person_login(
    kubeconfig: str | None, context: str | None, service_account: Path = SERVICE_ACCOUNT_DIR
) -> tuple[k8s.Configuration, str | None]:
    """The login kubectl would use, and the namespace it would default to.

    --kubeconfig/--context when given, else a pod's service account, else KUBECONFIG or
    ~/.kube/config; the namespace is the chosen context's (None when it names none).
    """
    try:
        if kubeconfig or context:
            configuration = kubeconfig_configuration(kubeconfig, context)
        else:
            try:
                return in_cluster_configuration(service_account), (service_account / "namespace").read_text().strip()
            except (k8s_config.ConfigException, OSError):
                configuration = kubeconfig_configuration(None, None)
        contexts, current = k8s_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, OSError) as error:
        raise LoginError(f"no cluster login: {error}") from None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return configuration, namespace


@dataclass(frozen=True)
class Login:
    """What kopf needs to watch with the same credentials (see controller.connection_info)."""

    server: str
    ca_path: str | None
    insecure: bool
    scheme: str | None
    token: str | None
    certificate_path: str | None
    private_key_path: str | None


def login_of(configuration: k8s.Configuration) -> Login:
    """The configuration's current credentials; refreshes a token that is due (file, exec plugin)."""
    # Since client 36.0.1 the bearer token is stored under "BearerToken" (was "authorization");
    # reading it through get_api_key_with_prefix runs the refresh hook, as kopf's login_via_client does.
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return Login(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class KubeClient:
    """The operator's own API calls, each in a worker thread, each failure a KubeError."""

    def __init__(self, configuration: k8s.Configuration, agent: str = "vector-migration-operator") -> None:
        self.configuration = configuration
        self._api = k8s.ApiClient(configuration)
        # audit logs and API priority-and-fairness see who is calling
        self._api.user_agent = f"{agent}/{__version__}"
        self.core = k8s.CoreV1Api(self._api)
        self.batch = k8s.BatchV1Api(self._api)
        self.custom = k8s.CustomObjectsApi(self._api)

    async def close(self) -> None:
        """Close the connection pool."""
        await asyncio.to_thread(self._api.close)

    async def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """One API call off the event loop; the JSON answer, None for 404."""

        def call() -> Any:
            return method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)

        try:
            response = await asyncio.to_thread(call)
        except k8s.ApiException as error:
            if error.status == 404:
                return None
            raise KubeError(error.status or 0, f"{what}: {error.status} {_reason(error)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(0, f"{what}: no answer ({type(error).__name__})") from None
        data = response.data
        body = json.loads(data) if data else {}
        return body if isinstance(body, dict) else {}

    async def _create(
        self, what: str, method: Callable[..., Any], read: Callable[[], Any], *args: Any
    ) -> dict[str, Any]:
        """Create, or return the existing object of that name (a restart re-creates safely)."""
        try:
            created = await self._call(f"create {what}", method, *args)
        except KubeError as error:
            if error.status != 409:
                raise
            created = None
        if created:
            return created
        existing = await read()
        if existing is None:
            raise KubeError(409, f"create {what}: conflict, and the object cannot be read")
        return dict(existing)

    # VectorMigrations
    async def may(self, verb: str, group: str, resource: str, namespace: str = "", subresource: str = "") -> bool:
        """Whether the API server's authorizer lets this login do ``verb``; ``namespace`` empty: in every one.

        A SelfSubjectAccessReview, which every authenticated user may create.
        """
        attributes = {"verb": verb, "group": group, "resource": resource, "subresource": subresource}
        if namespace:
            attributes["namespace"] = namespace
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attributes}}  # fmt: skip
        answer = await self._call(
            f"may I {verb} {resource}", k8s.AuthorizationV1Api(self._api).create_self_subject_access_review, review
        )
        return bool((answer or {}).get("status", {}).get("allowed"))

    async def read_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A VectorMigration as the API server has it now."""
        return await self._call(
            f"get vectormigration {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
        )

    async def annotate_migration(
        self, namespace: str, name: str, annotations: Mapping[str, str | None], resource_version: str | None = None
    ) -> None:
        """Set (or, with None, remove) annotations; with ``resource_version``, only on that version (else 409)."""
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        await self._call(
            f"annotate vectormigration {namespace}/{name}",
            self.custom.patch_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": metadata},
            _content_type=MERGE_PATCH,
        )

    async def read_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap, or None."""
        return await self._call(
            f"get configmap {namespace}/{name}", self.core.read_namespaced_config_map, name, namespace
        )

    async def patch_migration_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; with ``resource_version``, only if the object is still at it (else 409).

        The object as written (None: it is gone). kube.status_writer is the one caller.
        """
        locked = {"metadata": {"resourceVersion": resource_version}} if resource_version else {}
        return await self._call(
            f"patch vectormigration {namespace}/{name} status",
            self.custom.patch_namespaced_custom_object_status,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {**locked, "status": status},
            _content_type=MERGE_PATCH,
        )

    # Secrets
    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's decoded data; None when it does not exist."""
        secret = await self._call(f"get secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
        return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}

    async def apply_secret(self, secret: dict[str, Any], owner_label: tuple[str, str]) -> None:
        """Create a Secret, or bring its data up to date when it carries ``owner_label`` (ours).

        A Secret of that name that someone else made is never changed: a KubeError says so.
        """
        namespace, name = secret["metadata"]["namespace"] or "default", secret["metadata"]["name"]
        existing = await self._create(
            f"secret {namespace}/{name}",
            self.core.create_namespaced_secret,
            lambda: self._call(f"get secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace),
            namespace,
            secret,
        )
        key, value = owner_label
        if (existing.get("metadata", {}).get("labels") or {}).get(key) != value:
            raise KubeError(409, f"secret {namespace}/{name} exists and is not this migration's; it was left unchanged")
        if (existing.get("data") or {}) != secret["data"]:
            await self._call(
                f"patch secret {namespace}/{name}",
                self.core.patch_namespaced_secret,
                name,
                namespace,
                {"data": secret["data"]},
                _content_type=MERGE_PATCH,
            )

    # Jobs and their pods
    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job; None when it does not exist."""
        return await self._call(f"get job {namespace}/{name}", self.batch.read_namespaced_job, name, namespace)

    async def create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create a Job (or find the one created before)."""
        namespace, name = job["metadata"]["namespace"] or "default", job["metadata"]["name"]
        return await self._create(
            f"job {namespace}/{name}",
            self.batch.create_namespaced_job,
            lambda: self.read_job(namespace, name),
            namespace,
            job,
        )

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Pods matching a label selector."""
        body = await self._call(
            f"list pods {namespace} {label_selector}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
        )
        return list((body or {}).get("items") or [])

    # PersistentVolumeClaims
    async def create_claim(self, claim: dict[str, Any]) -> dict[str, Any]:
        """Create a PersistentVolumeClaim (or find the one created before)."""
        namespace, name = claim["metadata"]["namespace"] or "default", claim["metadata"]["name"]
        return await self._create(
            f"persistentvolumeclaim {namespace}/{name}",
            self.core.create_namespaced_persistent_volume_claim,
            lambda: self._call(
                f"get persistentvolumeclaim {namespace}/{name}",
                self.core.read_namespaced_persistent_volume_claim,
                name,
                namespace,
            ),
            namespace,
            claim,
        )

    async def delete_claim(self, namespace: str, name: str) -> None:
        """Delete a PersistentVolumeClaim (absent is fine)."""
        await self._call(
            f"delete persistentvolumeclaim {namespace}/{name}",
            self.core.delete_namespaced_persistent_volume_claim,
            name,
            namespace,
            propagation_policy="Background",
        )

    # ConfigMaps
    async def apply_configmap(self, configmap: dict[str, Any]) -> None:
        """Create a ConfigMap, or bring an existing one's annotations and data up to date."""
        namespace, name = configmap["metadata"]["namespace"] or "default", configmap["metadata"]["name"]
        existing = await self._create(
            f"configmap {namespace}/{name}",
            self.core.create_namespaced_config_map,
            lambda: self._call(
                f"get configmap {namespace}/{name}", self.core.read_namespaced_config_map, name, namespace
            ),
            namespace,
            configmap,
        )
        if existing.get("data") != configmap["data"]:
            change = {"metadata": {"annotations": configmap["metadata"].get("annotations", {})}}
            await self._call(
                f"patch configmap {namespace}/{name}",
                self.core.patch_namespaced_config_map,
                name,
                namespace,
                {**change, "data": configmap["data"]},
                _content_type=MERGE_PATCH,
            )


def _reason(error: k8s.ApiException) -> str:
    """The server's reason and message from an error (a Status object), never the request or headers."""
    try:
        body = json.loads(error.body) if error.body else {}
    except (TypeError, ValueError):
        body = {}  # an error page from a proxy in front of the API server, say
    if not isinstance(body, dict):
        body = {}
    return " ".join(str(part) for part in (body.get("reason") or error.reason, body.get("message")) if part)
