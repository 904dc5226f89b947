"""kopf registration: thin handlers that call the reconciler and translate its outcome.

Every handler reads the resource, calls one function, writes the status it returns, posts an
Event when the phase changes, and maps the outcome onto kopf's control flow: TemporaryError to
come back (next phase, or a wait with backoff), PermanentError for a failure a person must fix.
Handlers return nothing, because kopf would store a return value in the resource's status.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client import Configuration

from ..api import JobDefaults, VectorMigrationStatus
from ..engine.outcomes import Fail, Outcome, Wait
from ..engine.runner import retry_delay
from ..status import timing_key
from ..vocabulary import (
    API_GROUP,
    API_VERSION,
    COMPONENT,
    FINALIZER,
    LEGACY_FINALIZER,
    PLURAL,
    ConditionType,
    Phase,
    Reason,
    Strategy,
)
from .client import KubeClient, KubeError, load_configuration, login_of
from .merge_patch import merge_patch_of
from .metrics import OperatorMetrics
from .reconciler import OperatorState, check_for_drift, clean_up_when_due
from .reconciler import reconcile as reconcile_migration
from .reconciler import release as release_migration
from .status_writer import StatusWriter

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
KOPF_PREFIX = f"kopf.{API_GROUP}"
# The official client's login: by default the service account in a pod, else the kubeconfig.
LoginFunction = Callable[[], Configuration]
# Watches end on the server's side after this long (then kopf starts the next one at once), and a
# watch that has said nothing for longer than the client timeout is taken for a dropped connection
# (a load balancer or NAT that forgot it silently) and opened again. An int: kopf sends it as the
# watch's timeoutSeconds, and a real kube-apiserver refuses "300.0" with 400 (strconv.ParseInt),
# which stopped the operator at its first watch; the emulator had taken it.
WATCH_SERVER_TIMEOUT = 300
WATCH_CLIENT_TIMEOUT = WATCH_SERVER_TIMEOUT + 30.0
WATCH_CONNECT_TIMEOUT = 10.0
# How often the drift timer wakes; a resource is checked when its spec.driftCheck.interval is due.
DRIFT_TIMER_SECONDS = 30.0


def connection_info(configuration: Configuration) -> kopf.ConnectionInfo:
    """Kopf's credentials from the official client's: its watch and our calls log in alike."""
    login = login_of(configuration)
    return kopf.ConnectionInfo(
        server=login.server,
        ca_path=login.ca_path,
        insecure=login.insecure,
        scheme=login.scheme,
        token=login.token,
        certificate_path=login.certificate_path,
        private_key_path=login.private_key_path,
    )


def _drop_legacy_finalizer(body: kopf.RawBody) -> None:
    """Remove kopf's default finalizer from a resource an older release reconciled."""
    finalizers: list[str] = (body.get("metadata") or {}).get("finalizers") or []
    while LEGACY_FINALIZER in finalizers:
        finalizers.remove(LEGACY_FINALIZER)


def _forget_legacy_finalizer(body: kopf.Body, patch: kopf.Patch) -> None:
    if LEGACY_FINALIZER in (body.metadata.get("finalizers") or []):
        patch.fns.append(_drop_legacy_finalizer)


# size: kopf's handlers are closures over the operator's state, registered in one place
def build_registry(
    login: LoginFunction = load_configuration,
    metrics: OperatorMetrics | None = None,
    scratch: Path | None = None,
    job_defaults: JobDefaults | None = None,
    drift_timer: float = DRIFT_TIMER_SECONDS,
) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator (a fresh one per operator run and per test)."""
    registry = kopf.OperatorRegistry()
    state = OperatorState(scratch=scratch, job_defaults=job_defaults or JobDefaults())
    metrics = metrics or OperatorMetrics()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # kopf's bookkeeping lives in annotations under a prefix of its own: status holds only our
        # fields, and the annotations a person sets (ruvector.dev/approve, .../paused) stay part of
        # what kopf compares, so changing them triggers a reconciliation.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=KOPF_PREFIX, key="last-handled-configuration"
        )
        # Events are posted deliberately (one per phase change and failure), never from log lines.
        settings.posting.level = logging.CRITICAL + 10
        # No watching of CRDs and namespaces: the CRD is installed before the operator (Helm's crds/),
        # the namespaces are named, and the ServiceAccount needs no cluster-wide read access for it.
        settings.scanning.disabled = True
        settings.persistence.finalizer = FINALIZER
        settings.posting.reporting_component = COMPONENT
        settings.posting.reporting_instance = socket.gethostname()  # the pod's name
        settings.posting.event_name_prefix = f"{COMPONENT}-"
        settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
        settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
        settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT

    @kopf.on.login(registry=registry)
    def authenticate(**_: Any) -> kopf.ConnectionInfo:
        # One configuration for the operator's life: the official client re-reads a rotated token
        # file (or re-runs an exec plugin) when it is due, and kopf logs in again through here after a 401.
        if state.client is None:
            state.client = KubeClient(login())
        return connection_info(state.client.configuration)

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        await state.close()

    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, registry=registry)
    async def reconcile(body: kopf.Body, patch: kopf.Patch, uid: str, retry: int, **_: Any) -> None:
        _forget_legacy_finalizer(body, patch)
        # Each warning is posted once as an Event (an index dropped by request, a stand-in target),
        # so `kubectl describe` and event-watching alerting see it, not only the status.
        posted = state.warned.setdefault(uid, set((body.get("status") or {}).get("warnings") or []))
        strategy = str((body.get("spec") or {}).get("strategy") or Strategy.IN_PLACE.value)  # the CRD's default
        writer = StatusWriter.of(state.client, body)

        async def progress(before: Phase, status: VectorMigrationStatus, outcome: Outcome) -> None:
            await writer.write(merge_patch_of(status))
            for message in status.warnings:
                if message not in posted:
                    posted.add(message)
                    kopf.event(body, type="Warning", reason=Reason.WARNING.value, message=message[:1000])
            metrics.observe(uid, before, status.phase, status.timings.get(timing_key(before)), None)
            metrics.describe(uid, body.metadata.namespace or "", body.metadata.name or "", strategy, status)
            if status.phase != before:
                stalled = next((c for c in status.conditions if c.type == ConditionType.STALLED.value), None)
                failed = stalled is not None and stalled.status == "True"
                reason = outcome.reason.value if isinstance(outcome, Fail) else status.phase.value
                kopf.event(body, type="Warning" if failed else "Normal", reason=reason, message=status.message[:1000])

        try:
            result = await reconcile_migration(state, body, progress)
        except KubeError as error:
            if not error.transient:
                raise
            # A conflict, throttling or an API server restart: what the engine did is in its journal
            # and in this run's memory, so the next attempt continues; ask again in seconds, not kopf's
            # default minute for unexpected errors.
            raise kopf.TemporaryError(f"the Kubernetes API answered: {error}; trying again", delay=3.0) from None
        failure = None
        if result.phase != result.previous_phase and result.phase in (Phase.FAILED, Phase.ROLLED_BACK):
            stalled = [c for c in result.status.get("conditions", []) if c.get("type") == ConditionType.STALLED.value]
            failure = str(stalled[0].get("reason")) if stalled else "Unknown"
        metrics.observe(uid, result.previous_phase, result.phase, None, failure)
        await writer.write(result.status)
        for annotation in result.consumed_annotations:
            patch.metadata.annotations[annotation] = None  # acted on once; it must not act again
        # the outcome is the decision: a Wait comes back after the engine's one backoff rule
        # (runner.retry_delay, the command line's too; ``retry`` counts kopf's consecutive retries),
        # a Fail stops for a person, anything else ends this reconciliation
        if isinstance(result.outcome, Wait):
            raise kopf.TemporaryError(str(result.status.get("message", "")), delay=retry_delay(result.outcome, retry))
        if isinstance(result.outcome, Fail):
            raise kopf.PermanentError(result.outcome.message)

    @kopf.timer(*RESOURCE, interval=drift_timer, initial_delay=drift_timer, registry=registry)
    async def drift(body: kopf.Body, uid: str, **_: Any) -> None:
        # What a succeeded migration kept until keepOldFor goes once it is due.
        writer = StatusWriter.of(state.client, body)
        cleaned = await clean_up_when_due(state, body)
        if cleaned is not None:
            await writer.write(cleaned)
            return
        # Each resource's own spec.driftCheck.interval decides when its database is read again.
        found = await check_for_drift(state, body)
        if found is None:
            return
        await writer.write({"conditions": found.conditions})
        metrics.describe(uid, body.metadata.namespace or "", body.metadata.name or "", found.strategy, found.status)
        if found.newly_drifted is not None:
            kopf.event(body, type="Warning", reason=Reason.DRIFTED.value, message=found.newly_drifted[:1000])

    @kopf.on.delete(*RESOURCE, registry=registry)
    async def release(body: kopf.Body, patch: kopf.Patch, uid: str, **_: Any) -> None:
        _forget_legacy_finalizer(body, patch)
        # kopf runs this only after any reconciliation in flight has returned, so a swap
        # transaction has committed or rolled back by now.
        for kind, reason, message in await release_migration(state, body):
            kopf.event(body, type=kind, reason=reason, message=message)
        metrics.forget(uid)

    return registry
