"""A real Kubernetes control plane on this machine: etcd, kube-apiserver and kube-controller-manager.

The binaries are Kubernetes' own, built from the Go module proxy by scripts/build-control-plane.sh.
The API server serves TLS from a private CA, authorizes with Node and RBAC, issues service-account
tokens and runs its default admission plugins; the controller manager runs the Job controller,
the garbage collector, namespaces and service accounts. Nothing runs pods: there is no kubelet and
no scheduler (the node stand-in, once it exists, plays that part and says so).

    python -m tests.real_cluster.control_plane up [--dir DIR]     # last line: kubeconfig: <path>
    python -m tests.real_cluster.control_plane down [--dir DIR]

`make cluster` and `make cluster-down` run these; the tests start one of their own per session.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-control-plane.sh"
SERVICE_RANGE = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneMissing(LookupError):
    """The binaries are not built (scripts/build-control-plane.sh builds them)."""


def built_bin_dir(build: bool = False) -> Path:
    """The directory with the built binaries: VMIG_CONTROL_PLANE_BIN, else the build script's cache."""
    named = os.environ.get("VMIG_CONTROL_PLANE_BIN")
    if named:
        path = Path(named)
    elif build:
        done = subprocess.run([BUILD], check=True, capture_output=True, text=True)
        path = Path(done.stdout.strip().splitlines()[-1].removeprefix("bin: "))
    else:
        raise ControlPlaneMissing("VMIG_CONTROL_PLANE_BIN is not set (make control-plane prints it)")
    if not (path / "kube-apiserver").is_file():
        raise ControlPlaneMissing(f"no kube-apiserver in {path}")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ControlPlane:
    """The three servers' processes and what a client needs to reach them, under ``root``."""

    bin_dir: Path
    root: Path
    # the processes this object started (`down` in another process finds them by the pids in state.json)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    arguments: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._state()['apiserverPort']}"

    def up(self, timeout: float = 120.0) -> Path:
        """Start etcd, the API server and the controller manager; the admin kubeconfig once the server is ready."""
        self.root.mkdir(parents=True, exist_ok=True)
        ports = {"etcdPort": free_port(), "etcdPeerPort": free_port(), "apiserverPort": free_port()}
        (self.root / "state.json").write_text(json.dumps({**ports, "pids": []}))
        self._certificates()
        etcd = self.root / "etcd"
        self._start(
            "etcd",
            "--name=vmig",
            f"--data-dir={etcd}",
            f"--listen-client-urls=http://127.0.0.1:{ports['etcdPort']}",
            f"--advertise-client-urls=http://127.0.0.1:{ports['etcdPort']}",
            f"--listen-peer-urls=http://127.0.0.1:{ports['etcdPeerPort']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcdPeerPort']}",
            f"--initial-cluster=vmig=http://127.0.0.1:{ports['etcdPeerPort']}",
            "--log-level=warn",
        )
        pki = self.root / "pki"
        self._start(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{ports['etcdPort']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserverPort']}",
            f"--cert-dir={self.root / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            # the kubernetes Service's endpoint would be the advertise address, which a loopback one may not be
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        )
        admin = self.kubeconfig("admin")
        self._wait_ready(timeout)
        controllers = self.kubeconfig("controller-manager")
        self._start(
            "kube-controller-manager",
            f"--kubeconfig={controllers}",
            f"--authentication-kubeconfig={controllers}",
            f"--authorization-kubeconfig={controllers}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={self.root / 'controller-manager-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            "--profiling=false",
        )
        return admin

    def down(self) -> None:
        """Stop every process ``up`` started (the newest first), and wait for each to end."""
        state = self._state()
        for pid in reversed(state.get("pids", [])):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for pid in state.get("pids", []):
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for process in self.processes:
            process.wait()
        self.processes.clear()
        state["pids"] = []
        if self.root.exists():
            (self.root / "state.json").write_text(json.dumps(state))

    def kubeconfig(self, user: str) -> Path:
        """A kubeconfig with the CA's data and ``user``'s client certificate (admin: system:masters)."""
        pki = self.root / "pki"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "vmig", "cluster": {"server": self.url,
                                                      "certificate-authority": str(pki / "ca.crt")}}],
            "users": [{"name": user, "user": {"client-certificate": str(pki / f"{user}.crt"),
                                              "client-key": str(pki / f"{user}.key")}}],
            "contexts": [{"name": "vmig", "context": {"cluster": "vmig", "user": user}}],
            "current-context": "vmig",
        }  # fmt: skip
        path = self.root / f"{user}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _certificates(self) -> None:
        pki = self.root / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="vector-migration test cluster")
        (pki / "ca.crt").write_bytes(ca.cert_pem.bytes())
        hosts = ("127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.96.0.1")
        leaves = {
            "apiserver": ca.issue_cert(*hosts, common_name="kube-apiserver"),
            "admin": ca.issue_cert("admin.vmig.test", common_name="admin", organization_name="system:masters"),
            "controller-manager": ca.issue_cert(
                "controller-manager.vmig.test", common_name="system:kube-controller-manager"
            ),
        }
        for name, leaf in leaves.items():
            (pki / f"{name}.crt").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
            (pki / f"{name}.key").write_bytes(leaf.private_key_pem.bytes())
            (pki / f"{name}.key").chmod(0o600)
        signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(
            signing.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def kubectl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The real kubectl, as the admin, with this environment's kubectl-vmig on PATH (plugin discovery)."""
        # KUBECONFIG, not --kubeconfig: kubectl refuses flags before a plugin's name
        environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                       "KUBECONFIG": str(self.root / "admin.kubeconfig")}  # fmt: skip
        return subprocess.run([str(self.bin_dir / "kubectl"), *argv], capture_output=True, text=True,
                              env=environment, timeout=60, check=False)  # fmt: skip

    def restart_apiserver(self, down_for: float = 2.0, timeout: float = 60.0, forget_history: bool = False) -> None:
        """Stop kube-apiserver, leave it down ``down_for`` seconds, start it again as it was, wait until ready.

        ``forget_history``: while it is down, write to etcd and compact its history up to that write, so
        every watch the clients resume is from a revision etcd no longer has: the server answers 410 Gone.
        """
        (process,) = [p for p in self.processes if Path(str(p.args[0])).name == "kube-apiserver"]
        os.killpg(process.pid, signal.SIGTERM)
        try:  # it drains long-running requests (the operator's watches) for a while; then it is killed
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.processes.remove(process)
        state = self._state()
        state["pids"].remove(process.pid)
        (self.root / "state.json").write_text(json.dumps(state))
        time.sleep(down_for)
        if forget_history:
            self._compact_etcd()
        self._start("kube-apiserver", *self.arguments["kube-apiserver"])
        self._wait_ready(timeout)

    def _compact_etcd(self) -> None:
        """A write of our own (a key the API server never reads), then compaction at its revision.

        Through etcd's JSON gateway on loopback: the suite has no etcdctl.
        """
        etcd = f"http://127.0.0.1:{self._state()['etcdPort']}/v3/kv"
        key, value = (base64.b64encode(text.encode()).decode() for text in ("/vmig-test/forget", "history"))
        written = _post(f"{etcd}/put", {"key": key, "value": value})
        _post(f"{etcd}/compaction", {"revision": written["header"]["revision"], "physical": True})

    def _start(self, command: str, *argv: str) -> None:
        self.arguments[command] = argv
        with (self.root / f"{command}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(self.bin_dir / command), *argv], stdout=log, stderr=log, start_new_session=True
            )
        self.processes.append(process)
        state = self._state()
        state["pids"].append(process.pid)
        (self.root / "state.json").write_text(json.dumps(state))

    def _wait_ready(self, timeout: float) -> None:
        pki = self.root / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        deadline = time.monotonic() + timeout
        last = ""
        (apiserver,) = [p.pid for p in self.processes if Path(str(p.args[0])).name == "kube-apiserver"]
        while time.monotonic() < deadline and _alive(apiserver):
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=5) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except OSError as error:
                last = str(error)
            time.sleep(0.5)
        log = (self.root / "kube-apiserver.log").read_text()[-2000:]
        raise TimeoutError(f"kube-apiserver not ready ({last or 'it exited'}):\n{log}")

    def _state(self) -> dict[str, object]:
        path = self.root / "state.json"
        return dict(json.loads(path.read_text())) if path.exists() else {"pids": []}


def _post(url: str, body: dict[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (etcd on loopback)
        return dict(json.loads(answer.read()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.real_cluster.control_plane")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=ROOT / ".cluster", help="where its state, keys and logs go")
    args = parser.parse_args(argv)
    plane = ControlPlane(built_bin_dir(build=args.action == "up"), args.dir.resolve())
    if args.action == "down":
        plane.down()
        print(f"stopped the control plane in {args.dir}")
        return 0
    plane.down()  # a second `up` replaces the first
    kubeconfig = plane.up()
    print(f"API server: {plane.url} (etcd, kube-apiserver, kube-controller-manager; logs in {args.dir})")
    print(f"kubeconfig: {kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
