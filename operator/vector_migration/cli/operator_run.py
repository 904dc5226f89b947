"""`vector-migration operator`: the kopf operator's process, its peering and its Job defaults."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import socket
import sys
from collections.abc import Mapping

from .output import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def peering_priority(pod_name: str) -> int:
    """A priority that differs between replicas: kopf freezes every peer when two priorities are equal.

    Pods of one Deployment have distinct names; a hash spreads them over 31 bits, so a tie
    (and with it a frozen operator) is a one-in-two-billion event, and the same pod keeps its
    priority across restarts of its container.
    """
    return int.from_bytes(hashlib.sha256(pod_name.encode()).digest()[:4], "big") >> 1


JOB_DEFAULTS_ENV = "VMIG_JOB_DEFAULTS"
DEFAULT_PEERING = "vector-migration-operator"


def peering_of(args: argparse.Namespace, environment: Mapping[str, str]) -> str | None:
    """The peering object to keep one replica active, or None to run standalone.

    Outside a cluster there is rarely one, and kopf waiting for a missing one pauses every watch;
    in a pod (KUBERNETES_SERVICE_HOST is set) the chart installs it, and names it with --peering.
    """
    if args.standalone:
        return None
    if args.peering:
        return str(args.peering)
    return DEFAULT_PEERING if environment.get("KUBERNETES_SERVICE_HOST") else None


# What the operator cannot work without, in each namespace it watches: kopf lists and watches the
# resources and patches them (finalizers, its progress annotations) and their status.
REQUIRED_GRANTS = (("list", ""), ("watch", ""), ("patch", ""), ("patch", "status"))


async def missing_grants(namespaces: list[str]) -> str | None:
    """One line naming what RBAC does not grant the operator's login where it would watch, or None.

    Without it, kopf retries a 403 forever and the migration waits with nothing said; a flag that
    asks for more than the chart granted (--all-namespaces with watchNamespaces) is the usual cause.
    """
    from ..kube.client import KubeClient, KubeError, LoginError, load_configuration
    from ..vocabulary import API_GROUP, PLURAL

    try:
        client = KubeClient(load_configuration())
    except LoginError as error:
        return str(error)
    try:
        for namespace in namespaces or [""]:
            for verb, subresource in REQUIRED_GRANTS:
                if not await client.may(verb, API_GROUP, PLURAL, namespace, subresource):
                    where = f"in namespace {namespace}" if namespace else "in every namespace (--all-namespaces)"
                    what = f"{PLURAL}/{subresource}" if subresource else PLURAL
                    return (
                        f"RBAC does not let the operator {verb} {what}.{API_GROUP} {where}; grant it (the chart's "
                        "rbac.create), or watch only the namespaces the chart's watchNamespaces lists (--namespace)"
                    )
    except KubeError as error:
        return f"cannot ask the API server what the operator may do: {error}"
    finally:
        await client.close()
    return None


def run_operator(args: argparse.Namespace) -> int:
    """Run the operator until it is stopped: kopf, with the registry, the metrics and the peering chosen."""
    import kopf
    from pydantic import ValidationError

    from ..api import JobDefaults, describe_validation_error
    from ..kube.controller import build_registry
    from ..kube.metrics import OperatorMetrics

    try:
        job_defaults = JobDefaults.model_validate_json(os.environ.get(JOB_DEFAULTS_ENV) or "{}")
    except ValidationError as error:
        sys.stderr.write(f"error: {JOB_DEFAULTS_ENV}: {describe_validation_error(error)}\n")
        return EXIT_USAGE
    refusal = asyncio.run(missing_grants(list(args.namespace)))
    if refusal:
        sys.stderr.write(f"error: {refusal}\n")
        return EXIT_FAILED
    peering = peering_of(args, os.environ)
    kopf.configure(log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL)
    logging.getLogger().setLevel(args.log_level.upper())
    metrics = OperatorMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    asyncio.run(
        kopf.operator(
            registry=build_registry(metrics=metrics, scratch=args.scratch_dir, job_defaults=job_defaults),
            clusterwide=args.all_namespaces,
            namespaces=list(args.namespace),
            standalone=peering is None,
            peering_name=peering,
            priority=args.priority if args.priority is not None else peering_priority(socket.gethostname()),
            liveness_endpoint=args.liveness,
        )
    )
    return EXIT_OK
