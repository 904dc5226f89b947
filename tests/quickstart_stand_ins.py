"""STAND-INS for `kubectl` and `helm`, doing what examples/quickstart.sh asks of them against the emulator.

The emulator serves too little of the API for real kubectl (discovery, OpenAPI), and there is
no helm binary here (helm-python-sdk binds Helm's Go SDK). These do what the quick start runs,
and refuse anything else with exit code 2 and the word "stand-in", so a quick start that grows a
command fails its test until the stand-in learns it:
- `helm install` renders the chart with real Helm (helm-python-sdk) and applies what the emulator
  serves (the CRD); the operator's Deployment is not run, the test runs the operator in its own
  process instead; Namespaces are not made (the emulator cannot keep them, nor needs them);
- `kubectl create namespace|secret generic`, `apply -f`, and `wait --for=condition=...|jsonpath=...`
  go through the official Kubernetes client, logged in by KUBECONFIG;
- `kubectl vmig ...` runs the real `kubectl-vmig` from PATH, as kubectl's plugin discovery does.

Each writes one line to stderr saying it is a stand-in.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

GROUP, VERSION, PLURAL = "ruvector.dev", "v1alpha1", "vectormigrations"


def refuse(what: str) -> int:
    print(f"{what}: the quick start's stand-in does not do this", file=sys.stderr)
    return 2


def create_namespace(name: str) -> None:
    # kmock's emulator cannot parse POST /api/v1/namespaces (it reads every /api/v1/namespaces/...
    # path as a namespaced one) and serves namespaced objects without a Namespace, so none is made.
    print(f"namespace/{name} created (stand-in: the emulator keeps no Namespace objects)")


def api() -> client.ApiClient:
    config.load_kube_config()
    return client.ApiClient()


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def kubectl(argv: list[str]) -> int:
    print("kubectl (stand-in for the quick start's test): " + " ".join(argv[:3]), file=sys.stderr)
    if argv[:1] == ["vmig"]:
        plugin = shutil.which("kubectl-vmig")
        if plugin is None:
            return refuse("kubectl vmig without kubectl-vmig on PATH")
        os.execv(plugin, [plugin, *argv[1:]])  # noqa: S606 - as kubectl runs a plugin
    parser = argparse.ArgumentParser(prog="kubectl")
    parser.add_argument("words", nargs="+")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("-f", "--filename")
    parser.add_argument("--from-literal", action="append", default=[])
    parser.add_argument("--for", dest="until")
    parser.add_argument("--timeout", default="30s")
    args = parser.parse_args(argv)
    core = client.CoreV1Api(api())
    match args.words:
        case ["create", "namespace", name]:
            create_namespace(name)
        case ["create", "secret", "generic", name]:
            literals = dict(literal.split("=", 1) for literal in args.from_literal)
            data = {key: base64.b64encode(value.encode()).decode() for key, value in literals.items()}
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}
            core.create_namespaced_secret(args.namespace, secret)
        case ["apply"] if args.filename:
            for document in yaml.safe_load_all(Path(args.filename).read_text()):
                if document["kind"] != "VectorMigration":
                    return refuse(f"apply of a {document['kind']}")
                namespace = document["metadata"].setdefault("namespace", args.namespace)
                # what a real API server sets on create and the emulator does not (tests/cluster.py's apply)
                document["metadata"].update(resourceVersion="1", uid=f"uid-{namespace}-{document['metadata']['name']}")
                document["metadata"]["generation"] = 1
                custom = client.CustomObjectsApi(core.api_client)
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, document)
        case ["wait", target] if target.startswith("vmig/") and args.until:
            return wait(client.CustomObjectsApi(core.api_client), args.namespace, target[5:], args.until, args.timeout)
        case _:
            return refuse("kubectl " + " ".join(argv))
    return 0


def wait(custom: client.CustomObjectsApi, namespace: str, name: str, until: str, timeout: str) -> int:
    deadline = time.monotonic() + seconds(timeout)
    while time.monotonic() < deadline:
        resource: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = resource.get("status") or {}
        if until.startswith("condition="):
            wanted = until.removeprefix("condition=")
            met = any(c["type"] == wanted and c["status"] == "True" for c in status.get("conditions", []))
        elif until.startswith("jsonpath={.status.phase}="):
            met = status.get("phase") == until.removeprefix("jsonpath={.status.phase}=")
        else:
            return refuse(f"wait --for={until}")
        if met:
            print(f"vectormigration.ruvector.dev/{name} condition met")
            return 0
        time.sleep(0.5)
    print(f"error: timed out waiting for the condition on vectormigrations/{name}", file=sys.stderr)
    return 1


def helm(argv: list[str]) -> int:
    import helm_python

    print("helm (stand-in for the quick start's test; the chart is rendered by real Helm)", file=sys.stderr)
    parser = argparse.ArgumentParser(prog="helm")
    parser.add_argument("command")
    parser.add_argument("release")
    parser.add_argument("chart")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--create-namespace", action="store_true")
    parser.add_argument("--wait", action="store_true")
    args = parser.parse_args(argv)
    if args.command != "install" or not Path(args.chart).is_dir():
        return refuse("helm " + " ".join(argv) + " (only install from a chart directory)")
    manifests = helm_python.Chart.load(args.chart).render(
        {}, name=args.release, namespace=args.namespace, is_install=True
    )
    objects = [o for name, text in manifests.items() if name.endswith(".yaml") for o in yaml.safe_load_all(text) if o]
    core = client.CoreV1Api(api())
    if args.create_namespace:
        create_namespace(args.namespace)
    extensions = client.ApiextensionsV1Api(core.api_client)
    for crd in [o for o in objects if o["kind"] == "CustomResourceDefinition"]:
        extensions.create_custom_resource_definition(crd)
    print(f"NAME: {args.release}\nNAMESPACE: {args.namespace}\nSTATUS: deployed ({len(objects)} objects rendered)")
    return 0


def main() -> None:
    tool = Path(sys.argv[0]).name
    sys.exit(kubectl(sys.argv[1:]) if tool == "kubectl" else helm(sys.argv[1:]))
