"""STAND-IN for a node (the scheduler and the kubelet) in the real-cluster tests. It is not a kubelet.

The real controllers create pods (the Job controller a Job's, the ReplicaSet controller the chart's
Deployment's); nothing schedules or runs them, since the control plane has neither a scheduler nor
a kubelet. This stand-in does the least of their work, in a thread:
- it registers a Node object, labelled as a stand-in, keeps its Ready condition fresh, and binds
  each pending pod to it (pods/binding);
- it runs the pod's one container as **a real container of the pod's image**, with podman
  (tests/real_cluster/images.py), as the pod's security context says: its user and group, a
  read-only root, the capabilities dropped, no privilege escalation, runAsNonRoot checked. Images
  are never pulled (no registry is reachable): a pod whose image is not in the local store is left
  waiting with ErrImageNeverPull, as a kubelet with `imagePullPolicy: Never` leaves it;
- the container's `env` (values, `secretKeyRef`, `configMapKeyRef`, `fieldRef`) and its volumes
  (Secrets as files with the kubelet's modes and fsGroup, the ServiceAccount's projected token,
  CA and namespace, emptyDirs, and one directory per claim, shared by the pods that mount it) are
  resolved from the real API objects. The container shares the machine's network, and
  KUBERNETES_SERVICE_HOST/PORT name the API server directly: the stand-in for the Service's routing;
- it writes the pod's status as a kubelet would (phase, Ready, the container's state, exit code and
  termination message), so the real Job controller completes or fails the Job, and it stops the
  container of a pod that is being deleted, then lets the deletion finish.

It enforces no resource limit, runs no probe, refreshes no token, and never restarts a container: a
Deployment's pod that exits is Failed, and its ReplicaSet makes a new one.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from tests.real_cluster.images import podman

NODE = "vmig-node-stand-in"
HEARTBEAT_SECONDS = 10.0


@dataclass
class RunningPod:
    """A pod this stand-in started: its container's name, and where its files and log are."""

    namespace: str
    name: str
    container: str  # podman's name for it
    container_name: str  # the pod spec's
    image: str
    workdir: Path
    restart_always: bool
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "container.log"


class NodeStandIn:
    """Runs the pods no node runs, until stopped; see the module's docstring."""

    def __init__(self, admin: client.ApiClient, root: Path, apiserver_port: int) -> None:
        self.core = client.CoreV1Api(admin)
        self.root, self.apiserver_port = root, apiserver_port
        self.ran: list[str] = []  # namespace/name of every pod it started
        self.errors: list[str] = []  # what went wrong in the thread, for the test to show
        self.running: dict[str, RunningPod] = {}  # by pod UID
        self.finished: list[RunningPod] = []  # kept for their logs
        self._left_waiting: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_forever, name="node-stand-in", daemon=True)
        self._heartbeat_at = 0.0

    def __enter__(self) -> NodeStandIn:
        node = {"metadata": {"name": NODE, "labels": {"vector-migration.test/stand-in": "true"}}}
        with contextlib.suppress(ApiException):
            self.core.create_node(node)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for pod in self.running.values():
            podman("rm", "--force", "--time=10", pod.container, check=False)

    def log_of(self, namespace: str, name: str) -> str:
        """What the container of this pod (the last one by that name) wrote, stdout and stderr."""
        pods = [p for p in [*self.finished, *self.running.values()] if (p.namespace, p.name) == (namespace, name)]
        return _read_log(pods[-1].log) if pods else ""

    def _run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self._heartbeat()
                self._start_pending()
                self._finish_exited()
            except (ApiException, HTTPError, OSError):
                pass  # the API server restarting, say: try again next round
            except Exception as error:
                self.errors.append(repr(error))
            self._stop.wait(0.3)

    def _heartbeat(self) -> None:
        if time.monotonic() < self._heartbeat_at + HEARTBEAT_SECONDS:
            return
        now = _now()
        ready = {"type": "Ready", "status": "True", "reason": "StandIn", "lastHeartbeatTime": now,
                 "lastTransitionTime": now, "message": "the test suite's node stand-in"}  # fmt: skip
        self.core.patch_node_status(NODE, {"status": {"conditions": [ready]}})
        self._heartbeat_at = time.monotonic()

    def _start_pending(self) -> None:
        for pod in self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=").items:
            if (
                pod.status.phase != "Pending"
                or pod.metadata.deletion_timestamp
                or pod.metadata.uid in self._left_waiting
            ):
                continue
            manifest = self.core.api_client.sanitize_for_serialization(pod)
            try:
                self._start(manifest)
            except Exception as error:
                self.errors.append(f"{pod.metadata.namespace}/{pod.metadata.name}: {error!r}")
                self._left_waiting.add(pod.metadata.uid)

    def _start(self, pod: dict[str, Any]) -> None:
        namespace, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
        (container,) = pod["spec"]["containers"]  # one container: all the project's pods have
        if podman("image", "exists", container["image"], check=False).returncode != 0:
            self._left_waiting.add(uid)
            self._status(namespace, name, {"containerStatuses": [_waiting(container, "ErrImageNeverPull")]})
            return
        # the API server answers with a Status, which the client cannot read as the V1Binding it expects
        binding = {"metadata": {"name": name}, "target": {"kind": "Node", "name": NODE}}
        self.core.create_namespaced_pod_binding(name, namespace, binding, _preload_content=False)
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        workdir.chmod(0o755)
        running = RunningPod(namespace, name, f"vmig-pod-{uid}", container["name"], container["image"], workdir,
                             pod["spec"].get("restartPolicy", "Always") == "Always")  # fmt: skip
        arguments, environment = self._container(pod, container, workdir)
        self.running[uid] = running
        self.ran.append(f"{namespace}/{name}")
        podman("run", "--detach", f"--name={running.container}", "--log-driver=k8s-file",
               f"--log-opt=path={running.log}", *arguments, env=environment)  # fmt: skip
        now = _now()
        self._status(namespace, name, {
            "phase": "Running", "startTime": now, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": kind, "status": "True", "lastTransitionTime": now}
                           for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{**_status_of(container), "ready": True, "started": True,
                                   "state": {"running": {"startedAt": now}}}],
        })  # fmt: skip

    def _container(
        self, pod: dict[str, Any], container: dict[str, Any], workdir: Path
    ) -> tuple[list[str], dict[str, str]]:
        """podman's arguments for the container, and the environment they take the pod's variables from."""
        security = {**(pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        user = _user(security, container["image"])
        environment = self._environment(pod, container)
        arguments = ["--network=host", "--pull=never", "--read-only-tmpfs=false", f"--user={user}"]
        if fs_group is not None:
            arguments.append(f"--group-add={fs_group}")
        if security.get("readOnlyRootFilesystem"):
            arguments.append("--read-only")
        arguments += [f"--cap-drop={c}" for c in (security.get("capabilities") or {}).get("drop", [])]
        arguments += [f"--cap-add={c}" for c in (security.get("capabilities") or {}).get("add", [])]
        if security.get("allowPrivilegeEscalation") is False:
            arguments.append("--security-opt=no-new-privileges")
        for mount in container.get("volumeMounts", []):
            (volume,) = [v for v in pod["spec"].get("volumes", []) if v["name"] == mount["name"]]
            directory = self._volume(pod, volume, workdir, fs_group)
            source = directory / mount["subPath"] if mount.get("subPath") else directory
            arguments.append(f"--volume={source}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}")
        termination = workdir / "termination-log"
        termination.touch(mode=0o666)
        termination.chmod(0o666)
        arguments.append(f"--volume={termination}:{container.get('terminationMessagePath', '/dev/termination-log')}")
        arguments += [f"--env={key}" for key in environment]  # the values go through podman's environment
        if container.get("command"):
            arguments.append(f"--entrypoint={container['command'][0]}")
            return [*arguments, container["image"], *container["command"][1:], *container.get("args", [])], environment
        return [*arguments, container["image"], *container.get("args", [])], environment

    def _environment(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        environment = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.apiserver_port)}
        if container.get("envFrom"):
            raise NotImplementedError("envFrom: the stand-in resolves env only")
        for variable in container.get("env", []):
            source = variable.get("valueFrom") or {}
            if "value" in variable:
                environment[variable["name"]] = variable["value"]
            elif "secretKeyRef" in source:
                reference = source["secretKeyRef"]
                data = self.core.read_namespaced_secret(reference["name"], namespace).data or {}
                environment[variable["name"]] = base64.b64decode(data[reference["key"]]).decode()
            elif "configMapKeyRef" in source:
                reference = source["configMapKeyRef"]
                environment[variable["name"]] = self.core.read_namespaced_config_map(reference["name"], namespace).data[
                    reference["key"]
                ]
            elif "fieldRef" in source:
                environment[variable["name"]] = _field(pod, source["fieldRef"]["fieldPath"])
        return environment

    def _volume(self, pod: dict[str, Any], volume: dict[str, Any], workdir: Path, fs_group: int | None) -> Path:
        """The volume's directory on this machine, filled as a kubelet fills it."""
        namespace = pod["metadata"]["namespace"]
        if "persistentVolumeClaim" in volume:
            directory = self.root / "claims" / namespace / volume["persistentVolumeClaim"]["claimName"]
        else:
            directory = workdir / "volumes" / volume["name"]
        directory.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume or "persistentVolumeClaim" in volume:
            directory.chmod(0o777)  # as the kubelet makes an emptyDir; a fresh claim with fsGroup behaves alike
            return directory
        files: dict[str, bytes] = {}
        mode = 0o644
        if "secret" in volume:
            files, mode = self._secret_files(namespace, volume["secret"]), volume["secret"].get("defaultMode", 0o644)
        elif "configMap" in volume:
            files, mode = (
                self._config_map_files(namespace, volume["configMap"]),
                volume["configMap"].get("defaultMode", 0o644),
            )
        elif "projected" in volume:
            files, mode = self._projected_files(pod, volume["projected"]), volume["projected"].get("defaultMode", 0o644)
        else:
            raise NotImplementedError(f"volume {volume['name']}: the stand-in has no such volume type")
        for path, content in files.items():
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            # the kubelet's ownership: root's files, the fsGroup's group, readable by the group then
            os.chown(target, 0, fs_group if fs_group is not None else 0)
            target.chmod(mode | 0o440 if fs_group is not None else mode)
        return directory

    def _secret_files(self, namespace: str, source: dict[str, Any]) -> dict[str, bytes]:
        data = {
            k: base64.b64decode(v)
            for k, v in (self.core.read_namespaced_secret(source["secretName"], namespace).data or {}).items()
        }
        return {
            item["path"]: data[item["key"]] for item in source.get("items") or [{"key": k, "path": k} for k in data]
        }

    def _config_map_files(self, namespace: str, source: dict[str, Any]) -> dict[str, bytes]:
        data = {
            k: v.encode()
            for k, v in (self.core.read_namespaced_config_map(source["name"], namespace).data or {}).items()
        }
        return {
            item["path"]: data[item["key"]] for item in source.get("items") or [{"key": k, "path": k} for k in data]
        }

    def _projected_files(self, pod: dict[str, Any], projected: dict[str, Any]) -> dict[str, bytes]:
        """The ServiceAccount admission plugin's volume: a token bound to this pod, the cluster's CA, the namespace."""
        namespace, files = pod["metadata"]["namespace"], {}
        for source in projected["sources"]:
            if "serviceAccountToken" in source:
                metadata = pod["metadata"]
                bound = {"kind": "Pod", "apiVersion": "v1", "name": metadata["name"], "uid": metadata["uid"]}
                lifetime = source["serviceAccountToken"].get("expirationSeconds", 3600)
                request = {"spec": {"expirationSeconds": lifetime, "boundObjectRef": bound}}
                token = self.core.create_namespaced_service_account_token(
                    pod["spec"].get("serviceAccountName", "default"), namespace, request
                ).status.token
                files[source["serviceAccountToken"]["path"]] = token.encode()
            elif "configMap" in source:
                files.update(self._config_map_files(namespace, source["configMap"]))
            elif "secret" in source:
                files.update(
                    self._secret_files(namespace, {"secretName": source["secret"]["name"], **source["secret"]})
                )
            elif "downwardAPI" in source:
                for item in source["downwardAPI"]["items"]:
                    files[item["path"]] = _field(pod, item["fieldRef"]["fieldPath"]).encode()
        return files

    def _finish_exited(self) -> None:
        for uid, pod in list(self.running.items()):
            state = podman("inspect", "--format={{.State.Running}} {{.State.ExitCode}}", pod.container, check=False)
            if state.returncode != 0:
                continue
            still_running, code = state.stdout.split()
            deleting = self._deleting(pod)
            if still_running == "true" and not deleting:
                continue
            if deleting:
                podman("stop", "--time=10", pod.container, check=False)
                with contextlib.suppress(ApiException):
                    self.core.delete_namespaced_pod(pod.name, pod.namespace, grace_period_seconds=0)
            else:
                self._report_exit(pod, int(code))
            podman("rm", "--force", pod.container, check=False)
            self.finished.append(self.running.pop(uid))

    def _deleting(self, pod: RunningPod) -> bool:
        try:
            return self.core.read_namespaced_pod(pod.name, pod.namespace).metadata.deletion_timestamp is not None
        except ApiException as error:
            return error.status == 404

    def _report_exit(self, pod: RunningPod, code: int) -> None:
        termination = pod.workdir / "termination-log"
        message = termination.read_text() if termination.exists() else ""
        message = message or _read_log(pod.log)[-1000:]  # terminationMessagePolicy: FallbackToLogsOnError
        terminated = {"exitCode": code, "message": message, "reason": "Completed" if code == 0 else "Error",
                      "startedAt": _now(), "finishedAt": _now()}  # fmt: skip
        self._status(pod.namespace, pod.name, {
            "phase": "Succeeded" if code == 0 and not pod.restart_always else "Failed",
            "conditions": [{"type": kind, "status": "False", "lastTransitionTime": _now()}
                           for kind in ("ContainersReady", "Ready")],
            "containerStatuses": [{"name": pod.container_name, "image": pod.image, "imageID": "", "ready": False,
                                   "restartCount": 0, "state": {"terminated": terminated}}],
        })  # fmt: skip

    def _status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, namespace, {"status": status})


def _user(security: dict[str, Any], image: str) -> str:
    """The container's UID:GID, refused as a kubelet refuses it when runAsNonRoot meets root."""
    uid = security.get("runAsUser")
    if uid is None:
        configured = podman("image", "inspect", "--format={{.Config.User}}", image).stdout.strip()
        uid_text = configured.split(":")[0] or "0"
        if not uid_text.isdigit():
            raise PermissionError(f"image {image} names user {configured!r}: runAsNonRoot cannot check a name")
        uid = int(uid_text)
    if security.get("runAsNonRoot") and uid == 0:
        raise PermissionError("container has runAsNonRoot and would run as root")
    group = security.get("runAsGroup")
    return f"{uid}:{group}" if group is not None else str(uid)


def _field(pod: dict[str, Any], path: str) -> str:
    fields = {"metadata.namespace": pod["metadata"]["namespace"], "metadata.name": pod["metadata"]["name"],
              "metadata.uid": pod["metadata"]["uid"], "spec.nodeName": NODE,
              "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
              "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}  # fmt: skip
    return fields[path]


def _status_of(container: dict[str, Any]) -> dict[str, Any]:
    return {"name": container["name"], "image": container["image"], "imageID": "", "restartCount": 0}


def _waiting(container: dict[str, Any], reason: str) -> dict[str, Any]:
    message = f"{container['image']} is not in the node stand-in's image store, and it never pulls"
    return {**_status_of(container), "ready": False, "state": {"waiting": {"reason": reason, "message": message}}}


def _read_log(path: Path) -> str:
    """A k8s-file log's lines without their timestamp and stream prefix."""
    if not path.exists():
        return ""
    return "".join(line.split(" ", 3)[-1] + "\n" for line in path.read_text().splitlines())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
