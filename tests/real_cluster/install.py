"""Install what the chart renders into the real API server, as `helm install` would, and log in as its ServiceAccount.

The chart is rendered by real Helm (helm-python-sdk); its `crds/` go first, as Helm installs them.
Objects are created through the official client as the admin. The Deployment is created too, but
nothing runs its pod (there is no scheduler or kubelet): the tests run the operator as a process,
logged in with the ServiceAccount's token, so what it may do is exactly what the chart grants.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from tests.chart import CHART, render
from tests.real_cluster.control_plane import ControlPlane


def install_chart(
    admin: client.ApiClient, namespace: str, values: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Create the chart's CRDs, then every object it renders; the rendered objects."""
    extensions = client.ApiextensionsV1Api(admin)
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if crd:
                _created(lambda crd=crd: extensions.create_custom_resource_definition(crd))
    _created(lambda: client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}}))
    objects = render(values, namespace=namespace)
    custom = client.CustomObjectsApi(admin)
    for obj in objects:
        if obj["kind"] == "CustomResourceDefinition":
            _created(lambda obj=obj: extensions.create_custom_resource_definition(obj))
            _established(extensions, obj["metadata"]["name"])
        elif obj["apiVersion"].startswith("kopf.dev/"):
            group, version = obj["apiVersion"].split("/")
            plural = obj["kind"].lower() + "s"
            _created(lambda obj=obj, group=group, version=version, plural=plural: (
                custom.create_cluster_custom_object(group, version, plural, obj)
                if obj["kind"].startswith("Cluster")
                else custom.create_namespaced_custom_object(group, version, obj["metadata"]["namespace"], plural, obj)
            ))  # fmt: skip
        else:
            _created(lambda obj=obj: utils.create_from_dict(admin, obj, namespace=obj["metadata"].get("namespace")))
    return objects


def service_account_kubeconfig(
    admin: client.ApiClient, plane: ControlPlane, namespace: str, name: str, directory: Path
) -> Path:
    """A kubeconfig with a token the API server issued for the ServiceAccount (TokenRequest), and the CA."""
    request = {"spec": {"expirationSeconds": 3600}}
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(name, namespace, request).status.token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "vmig", "cluster": {"server": plane.url,
                                                  "certificate-authority": str(plane.root / "pki" / "ca.crt")}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "vmig", "context": {"cluster": "vmig", "user": name, "namespace": namespace}}],
        "current-context": "vmig",
    }  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _created(create: Any) -> None:
    try:
        create()
    except utils.FailToCreateError as failures:
        if any(getattr(e, "status", None) != 409 for e in failures.api_exceptions):
            raise
    except ApiException as error:
        if error.status != 409:  # another test of this session installed it
            raise


def _established(extensions: client.ApiextensionsV1Api, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = extensions.read_custom_resource_definition(name).status
        if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} not Established")
