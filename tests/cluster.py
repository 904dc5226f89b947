"""A Kubernetes API for the operator tests: kmock's stateful emulator, plus stand-ins for what it lacks.

kmock serves the API (objects, watch streams, status subresources) but runs no controllers. The
emulator is served over TLS with a private CA, as a real API server is, and the operator logs in
through the official client's own loaders (a kubeconfig by default; a service-account directory
or client certificates where a test asks). Stand-ins, labelled as such, fill in the rest:
- `PrivateCA` plays the cluster's certificate authority (trustme);
- `Authenticator` plays the API server's authentication: a request without a token it issued or
  a client certificate its CA signed gets 401, as from a real API server;
- `JobRunner` plays the Job controller and the kubelet (it runs a Job's container command here,
  with the Job's environment and its volumes as directories, then records a Pod with the
  termination message and the Job's final status).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import aiohttp
import aiohttp.test_utils
import aiohttp.web
import kmock
import kopf
import trustme
import yaml

from tests.job_pods import moved_into
from vector_migration.api import JobDefaults
from vector_migration.kube.client import kubeconfig_configuration
from vector_migration.kube.controller import LoginFunction, build_registry
from vector_migration.kube.metrics import OperatorMetrics

RESOURCES = {
    "ruvector.dev/v1alpha1/vectormigrations": {
        "kind": "VectorMigration",
        "namespaced": True,
        "subresources": {"status"},
    },
    "apiextensions.k8s.io/v1/customresourcedefinitions": {"kind": "CustomResourceDefinition", "namespaced": False},
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/pods": {"kind": "Pod", "namespaced": True, "subresources": {"status"}},
    "v1/persistentvolumeclaims": {"kind": "PersistentVolumeClaim", "namespaced": True},
    "batch/v1/jobs": {"kind": "Job", "namespaced": True, "subresources": {"status"}},
    "kopf.dev/v1/clusterkopfpeerings": {"kind": "ClusterKopfPeering", "namespaced": False},
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
VMIG = "/apis/ruvector.dev/v1alpha1/namespaces/{namespace}/vectormigrations"
HARNESS_AGENT = "test-harness (kubectl and kubelet stand-ins)"
_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


class PrivateCA:
    """STAND-IN for the cluster's certificate authority: it signs the API server's certificate and clients'."""

    def __init__(self) -> None:
        self.ca = trustme.CA(organization_name="vector-migration tests")
        self.serving = self.ca.issue_cert("127.0.0.1", "localhost")

    def server_context(self) -> ssl.SSLContext:
        """The API server's side: its certificate, and client certificates checked when offered."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.serving.configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL  # a token or a certificate, as on a real API server
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def client_certificate(self, user: str) -> tuple[bytes, bytes]:
        """(certificate, private key) PEM for a user, as `kubectl certificate approve` would hand out."""
        issued = self.ca.issue_cert(f"{user}@users.test")
        return b"".join(blob.bytes() for blob in issued.cert_chain_pems), issued.private_key_pem.bytes()


class Authenticator:
    """STAND-IN for the API server's authentication: bearer tokens it issued, or a verified client certificate."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.rejected = 0

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return token

    def revoke(self, token: str) -> None:
        self.tokens.discard(token)

    def accepts(self, request: aiohttp.web.BaseRequest) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token in self.tokens:
            return True
        return bool(request.transport and request.transport.get_extra_info("peercert"))


def _api_server(context: ssl.SSLContext, authenticator: Authenticator) -> type[aiohttp.test_utils.RawTestServer]:
    """The emulator's HTTP server class, serving TLS and refusing unauthenticated requests with 401."""

    class ApiServer(aiohttp.test_utils.RawTestServer):
        def __init__(self, handler: Any, **kwargs: Any) -> None:
            async def authenticated(request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
                if authenticator.accepts(request):
                    response: aiohttp.web.StreamResponse = await handler(request)
                    return response
                authenticator.rejected += 1
                status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized",
                          "message": "Unauthorized", "code": 401}  # fmt: skip
                return aiohttp.web.json_response(status, status=401)

            super().__init__(authenticated, **kwargs)

        async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
            await super().start_server(loop=loop, ssl=context, **kwargs)

    return ApiServer


class Cluster:
    """HTTPS access to the emulator, as kubectl would use it, and the logins a pod or a person has."""

    def __init__(self, emulator: kmock.KubernetesEmulator, ca: PrivateCA, authenticator: Authenticator, root: Path):
        self.emulator = emulator
        self.url = str(emulator.url).rstrip("/")
        self.ca, self.authenticator, self.root = ca, authenticator, root
        # One connection per request: after an operator stops, a pooled keep-alive connection to the
        # emulator was seen to hang forever; kubectl does not share a pool with the operator either.
        self.http = aiohttp.ClientSession(
            base_url=self.url,
            connector=aiohttp.TCPConnector(force_close=True, ssl=ca.client_context()),
            headers={
                "User-Agent": HARNESS_AGENT,  # tells the harness's requests from the operator's
                "Authorization": f"Bearer {authenticator.issue()}",
            },
        )

    def kubeconfig(
        self,
        ca: Literal["data", "file"] = "data",
        auth: Literal["token", "certificate"] = "token",
        name: str = "kubeconfig",
    ) -> Path:
        """A kubeconfig file for this cluster, as a cloud CLI or `kind get kubeconfig` writes one."""
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        cluster: dict[str, str] = {"server": self.url}
        if ca == "data":
            cluster["certificate-authority-data"] = base64.b64encode(self.ca.pem()).decode()
        else:
            (directory / "ca.crt").write_bytes(self.ca.pem())
            cluster["certificate-authority"] = str(directory / "ca.crt")
        user: dict[str, str] = {}
        if auth == "token":
            user["token"] = self.authenticator.issue()
        else:
            certificate, key = self.ca.client_certificate("operator")
            user["client-certificate-data"] = base64.b64encode(certificate).decode()
            user["client-key-data"] = base64.b64encode(key).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "operator", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator"}}],
            "current-context": "test",
        }
        path = directory / "config"
        path.write_text(yaml.safe_dump(config))
        return path

    def service_account(self, name: str = "serviceaccount") -> tuple[Path, dict[str, str]]:
        """A pod's service-account directory (token, ca.crt, namespace) and the environment a pod has."""
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self.authenticator.issue())
        (directory / "ca.crt").write_bytes(self.ca.pem())
        (directory / "namespace").write_text("default")
        host, _, port = self.url.removeprefix("https://").rpartition(":")
        return directory, {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}

    def default_login(self) -> LoginFunction:
        path = self.kubeconfig()
        return lambda: kubeconfig_configuration(str(path))

    async def request(self, method: str, url: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type} if content_type else None
        async with self.http.request(method, url, json=body, headers=headers) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            return await response.json(content_type=None)

    async def apply_secret(self, name: str, data: dict[str, str], namespace: str = "default") -> None:
        encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": encoded,
        }
        await self.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body)

    async def apply(self, resource: dict[str, Any]) -> None:
        namespace = resource["metadata"].setdefault("namespace", "default")
        # The emulator assigns no resourceVersion, and kopf guards its finalizer patch with a JSON-patch
        # "test" on it; a real API server sets one on create.
        resource["metadata"].setdefault("resourceVersion", "1")
        resource["metadata"].setdefault("uid", f"uid-{namespace}-{resource['metadata']['name']}")  # likewise
        resource["metadata"].setdefault("generation", 1)
        await self.request("POST", VMIG.format(namespace=namespace), resource)

    async def create_peering(self, name: str) -> None:
        """The ClusterKopfPeering the chart installs, through which replicas keep one active."""
        body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
        await self.request("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", body)

    async def get(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.request("GET", f"{VMIG.format(namespace=namespace)}/{name}")
        return result

    async def annotate(self, name: str, annotations: dict[str, str], namespace: str = "default") -> None:
        await self.request(
            "PATCH",
            f"{VMIG.format(namespace=namespace)}/{name}",
            {"metadata": {"annotations": annotations}},
            "application/merge-patch+json",
        )

    async def delete(self, name: str, namespace: str = "default") -> None:
        await self.request("DELETE", f"{VMIG.format(namespace=namespace)}/{name}")

    async def wait_until_gone(self, name: str, timeout: float = 30.0, namespace: str = "default") -> None:
        deadline = time.monotonic() + timeout
        while await self.get(name, namespace) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is still there after {timeout}s")
            await asyncio.sleep(0.1)

    async def list(self, api: str, plural: str, namespace: str | None = "default") -> list[dict[str, Any]]:
        """The objects of one namespace, or of every namespace with None."""
        prefix = f"/api/{api}" if "/" not in api else f"/apis/{api}"
        where = "" if namespace is None else f"/namespaces/{namespace}"
        body = await self.request("GET", f"{prefix}{where}/{plural}")
        return list((body or {}).get("items", []))

    async def wait_for(
        self, name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60.0, namespace: str = "default"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = await self.get(name, namespace)
            if last is not None and done(last):
                return last
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out; last seen: {(last or {}).get('status')}")

    def traffic(self) -> str:
        """Every request the API server received, URL and body, as text (for secret scanning)."""
        return "\n".join(f"{request.method} {request.url}\n{request.text}" for request in self.emulator)

    async def eventually(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        """Events and metrics follow the status write by a moment: wait for them."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("the expected event or metric did not appear")
            await asyncio.sleep(0.1)

    def operator_requests(self) -> set[tuple[str, str, str, str | None]]:
        """(API group, resource, verb, object name) of every request the operator made, as RBAC sees them."""
        seen = set()
        for request in self.emulator:
            if (
                request.headers.get("User-Agent") == HARNESS_AGENT
                or request.resource is None
                or not request.resource.plural
            ):
                continue  # the harness, or discovery (non-resource URLs every account may read)
            verb = _VERBS[str(request.method.value).upper()]
            if verb == "get" and request.name is None:
                verb = "watch" if request.params.get("watch") in ("true", "1") else "list"
            resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            seen.add((request.resource.group, resource, verb, request.name))
        return seen

    def posted_events(self) -> list[dict[str, Any]]:
        """Events the operator posted. The emulator cannot generateName, so it stores only the first;
        the requests it received are the record of what was posted."""
        return [
            request.data
            for request in self.emulator
            if request.method == "POST" and request.url.path.endswith("/events")
        ]


def phase(resource: dict[str, Any]) -> str | None:
    return (resource.get("status") or {}).get("phase")


def condition(resource: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (resource.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


class JobRunner:
    """STAND-IN for the Job controller and the kubelet: runs each new Job's container command here."""

    def __init__(
        self, cluster: Cluster, root: Path, pg_bin: Path, fail: Callable[[dict[str, Any]], str | None]
    ) -> None:
        self.cluster, self.root, self.pg_bin, self.fail = cluster, root, pg_bin, fail
        self.started: list[str] = []
        self.enabled = True  # False: Jobs stay pending, as on a cluster without room for their pods

    async def run_forever(self) -> None:
        while True:
            for job in await self.cluster.list("batch/v1", "jobs", namespace=None) if self.enabled else []:
                name = job["metadata"]["name"]
                if name not in self.started and not job.get("status"):
                    self.started.append(name)
                    await self._run(job)
            await asyncio.sleep(0.2)

    async def _run(self, job: dict[str, Any]) -> None:
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        declared = {e["name"]: e["value"] for e in container.get("env", [])}
        env = dict(declared)
        workdir = self.root / name
        termination = workdir / "termination-log"
        for volume in pod["volumes"]:
            mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
            directory = workdir / volume["name"]
            if "persistentVolumeClaim" in volume:  # a claim is one directory, shared by every Job that mounts it
                directory = self.root / "claims" / volume["persistentVolumeClaim"]["claimName"]
            directory.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secret = await self.cluster.request(
                    "GET", f"/api/v1/namespaces/{namespace}/secrets/{volume['secret']['secretName']}"
                )
                for item in volume["secret"]["items"]:
                    (directory / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
            env.update(moved_into(declared, volume, mount, directory))
        env["TERMINATION_LOG"] = str(termination)
        env["PATH"] = f"{self.pg_bin}:{os.environ['PATH']}"
        injected = self.fail(job)
        if injected is None:
            process = await asyncio.create_subprocess_exec(
                *container["command"], env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            _, stderr = await process.communicate()
            code, error = process.returncode or 0, stderr.decode().strip()
        else:
            code, error = 1, injected
        message = termination.read_text() if code == 0 and termination.exists() else error[-1000:]
        await self.cluster.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-run", "namespace": namespace, "labels": {"job-name": name}},
                "status": {"containerStatuses": [{"name": container["name"], "state": {"terminated": {
                    "exitCode": code, "message": message}}}]},
            },
        )  # fmt: skip
        status: dict[str, Any] = {"succeeded": 1} if code == 0 else {
            "failed": 1,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": message}],
        }  # fmt: skip
        await self.cluster.request(
            "PATCH",
            f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
            {"status": status},
            "application/merge-patch+json",
        )


@contextlib.asynccontextmanager
async def running_cluster(
    root: Path, pg_bin: Path, fail_job: Callable[[dict[str, Any]], str | None] = lambda job: None
) -> AsyncIterator[tuple[Cluster, JobRunner]]:
    ca, authenticator = PrivateCA(), Authenticator()
    server = _api_server(ca.server_context(), authenticator)
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator, server_cls=server):
        for resource, info in RESOURCES.items():
            emulator.resources[resource] = kmock.ResourceInfo(**info, verbs=VERBS)
        cluster = Cluster(emulator, ca, authenticator, root / "cluster")
        runner = JobRunner(cluster, root, pg_bin, fail_job)
        task = asyncio.create_task(runner.run_forever())
        try:
            yield cluster, runner
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await cluster.http.close()


@contextlib.asynccontextmanager
async def running_operator(
    cluster: Cluster,
    metrics: OperatorMetrics | None = None,
    peering: tuple[str, int] | None = None,
    login: LoginFunction | None = None,
    drift_timer: float = 30.0,
    job_defaults: JobDefaults | None = None,
) -> AsyncIterator[None]:
    """The operator, in this process, logged in to the emulator; standalone unless given (peering name, priority).

    It logs in as a person's kubeconfig would have it (the CA's data, a token) unless given a login.
    """
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=build_registry(
                login=login or cluster.default_login(),
                metrics=metrics,
                drift_timer=drift_timer,
                job_defaults=job_defaults,
            ),
            clusterwide=True,
            standalone=peering is None,
            peering_name=peering[0] if peering else None,
            priority=peering[1] if peering else None,
            stop_flag=stop,
        )
    )
    try:
        await asyncio.sleep(0.5)
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=20)


Waiter = Callable[[dict[str, Any]], Awaitable[bool]]
