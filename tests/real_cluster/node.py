"""STAND-IN for a node (the scheduler and the kubelet) in the real-cluster tests. It is not a kubelet.

The real Job controller creates the Job's pod; nothing schedules or runs it, since the control plane
has neither a scheduler nor a kubelet. This stand-in does the least of their work, in a thread:
- it registers a Node object, labelled as a stand-in, and binds each pending pod to it (pods/binding);
- it runs the pod's first container's command **as a process on this machine**, not in a container
  of its image: its `env` values and `secretKeyRef`s, and its Secret volumes as files, are resolved
  from the real API objects; an emptyDir or a claim is a directory (one per claim, shared by the
  pods that mount it); a variable naming a mount's path, or a Secret's file, is moved there;
  PostgreSQL's client programs come from ``pg_bin`` instead of the image;
- it writes the pod's status as a kubelet would (phase, the container's exit code and termination
  message), so the real Job controller completes or fails the Job.

It enforces no security context, resource limit, probe or deadline, and never restarts a container.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.job_pods import moved_into

NODE = "vmig-node-stand-in"


class NodeStandIn:
    """Runs the pods of Jobs (any pod without a node) until stopped; see the module's docstring."""

    def __init__(self, admin: client.ApiClient, root: Path, pg_bin: Path) -> None:
        self.core = client.CoreV1Api(admin)
        self.root, self.pg_bin = root, pg_bin
        self.ran: list[str] = []
        self.errors: list[str] = []  # what went wrong in the thread, for the test to show
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_forever, name="node-stand-in", daemon=True)

    def __enter__(self) -> NodeStandIn:
        node = {"metadata": {"name": NODE, "labels": {"vector-migration.test/stand-in": "true"}}}
        with contextlib.suppress(ApiException):
            self.core.create_node(node)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run_forever(self) -> None:
        while not self._stop.is_set():
            for pod in self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=").items:
                owners = {owner.kind for owner in pod.metadata.owner_references or []}
                if "Job" in owners and pod.status.phase == "Pending":  # not the chart's Deployment's
                    try:
                        self._run(self.core.api_client.sanitize_for_serialization(pod))
                    except Exception as error:
                        self.errors.append(f"{pod.metadata.namespace}/{pod.metadata.name}: {error!r}")
            self._stop.wait(0.3)

    def _run(self, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        # the API server answers with a Status, which the client cannot read as the V1Binding it expects
        binding = {"metadata": {"name": name}, "target": {"kind": "Node", "name": NODE}}
        self.core.create_namespaced_pod_binding(name, namespace, binding, _preload_content=False)
        self.ran.append(f"{namespace}/{name}")
        container = pod["spec"]["containers"][0]
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        environment = self._environment(namespace, container)
        declared = dict(environment)  # paths are moved from what the pod declares, once each
        for volume in pod["spec"].get("volumes", []):
            mount = next((m for m in container.get("volumeMounts", []) if m["name"] == volume["name"]), None)
            if mount is None:
                continue
            directory = workdir / volume["name"]
            if "persistentVolumeClaim" in volume:
                directory = self.root / "claims" / namespace / volume["persistentVolumeClaim"]["claimName"]
            directory.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                self._secret_files(namespace, volume["secret"], directory)
            environment.update(moved_into(declared, volume, mount, directory))
        termination = workdir / "termination-log"
        environment["TERMINATION_LOG"] = str(termination)
        environment["PATH"] = f"{self.pg_bin}:{os.environ['PATH']}"
        self._status(namespace, name, {"phase": "Running", "startTime": _now()})
        done = subprocess.run(
            [*container.get("command", []), *container.get("args", [])],
            env=environment, capture_output=True, text=True, check=False,
        )  # fmt: skip
        message = termination.read_text() if done.returncode == 0 and termination.exists() else done.stderr[-1000:]
        terminated = {"exitCode": done.returncode, "message": message, "reason": "Completed" if done.returncode == 0
                      else "Error", "startedAt": _now(), "finishedAt": _now()}  # fmt: skip
        self._status(namespace, name, {
            "phase": "Succeeded" if done.returncode == 0 else "Failed",
            "containerStatuses": [{"name": container["name"], "image": container["image"], "imageID": "",
                                   "ready": False, "restartCount": 0, "state": {"terminated": terminated}}],
        })  # fmt: skip

    def _environment(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        environment: dict[str, str] = {}
        for variable in container.get("env", []):
            if "value" in variable:
                environment[variable["name"]] = variable["value"]
            elif "secretKeyRef" in (variable.get("valueFrom") or {}):
                reference = variable["valueFrom"]["secretKeyRef"]
                data = self.core.read_namespaced_secret(reference["name"], namespace).data or {}
                environment[variable["name"]] = base64.b64decode(data[reference["key"]]).decode()
        return environment

    def _secret_files(self, namespace: str, source: dict[str, Any], directory: Path) -> None:
        data = self.core.read_namespaced_secret(source["secretName"], namespace).data or {}
        for item in source.get("items") or [{"key": key, "path": key} for key in data]:
            path = directory / item["path"]
            path.write_bytes(base64.b64decode(data[item["key"]]))
            path.chmod(0o400)

    def _status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, namespace, {"status": status})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
