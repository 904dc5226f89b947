"""One reconciliation of a VectorMigration resource: the resource in, a status and an outcome out.

This is the glue between the Kubernetes resource and the engine: it resolves credentials from
the Secret, keeps one engine run per resource in memory between reconciliations (so the facts
the checklist learned are not read twice), honours the pause and approval annotations, and
publishes the plan. It does not import kopf; controller.py maps outcomes onto kopf's errors.
After an operator restart the memory is empty: the engine then reads the database's journal,
so nothing finished is repeated.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import ValidationError

from ..api import JobDefaults, VectorMigration, VectorMigrationStatus, describe_validation_error
from ..database.sql import ConnectionError_, DatabaseUnavailable, params_from_secret
from ..engine.context import Decisions, Migration, RunInputs, close_session, open_session
from ..engine.outcomes import Advance, Fail, Hold, Outcome, Wait
from ..engine.runner import drive, request_rollback
from ..engine.strategy import leftovers_due_in, strategy_of
from ..phases.drift import check_once
from ..status import fail, hold, record_drift, set_phase
from ..vocabulary import (
    ANNOTATION_APPROVE,
    ANNOTATION_DELETE_BACKUP,
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    ANNOTATION_RESTORE,
    ANNOTATION_ROLLBACK,
    Phase,
    Reason,
)
from .builders import build_cutover_configmap, build_plan_configmap, build_report_configmap, object_name
from .client import KubeClient
from .credentials import admin_login, ca_certificate, ca_source, secret_data
from .jobs import JobBackup
from .merge_patch import merge_patch_of
from .replica_target import publish_target_secret, target_server_login


@dataclass
class OperatorState:
    """What the operator keeps in memory: the API client and the engine run of each resource."""

    client: KubeClient | None = None
    runs: dict[str, Migration] = field(default_factory=dict)
    scratch: Path | None = None  # where Rebuild exports tables (the chart mounts an emptyDir)
    job_defaults: JobDefaults = field(default_factory=JobDefaults)  # the chart's `jobs` values
    # The status warnings already posted as Events, per resource: each is posted once.
    warned: dict[str, set[str]] = field(default_factory=dict)
    # When each succeeded migration's database was last checked for drift (time.monotonic()).
    drift_checked: dict[str, float] = field(default_factory=dict)

    async def forget(self, uid: str) -> None:
        """Close a resource's database session (releasing its migration lock) and drop its run."""
        self.warned.pop(uid, None)
        self.drift_checked.pop(uid, None)
        run = self.runs.pop(uid, None)
        if run is not None:
            await close_session(run)

    async def close(self) -> None:
        """Close every session and the API client."""
        for uid in list(self.runs):
            await self.forget(uid)
        if self.client is not None:
            await self.client.close()


@dataclass(frozen=True)
class Reconciled:
    """The status to write, the outcome that decides what happens next, and the phase change."""

    status: dict[str, Any]
    outcome: Outcome
    previous_phase: Phase
    phase: Phase
    # Annotations the engine acted on and that must not act again (the promotion of one pause).
    consumed_annotations: tuple[str, ...] = ()


def _status_of(body: Mapping[str, Any]) -> VectorMigrationStatus:
    raw = dict(body.get("status") or {})
    raw.pop("kopf", None)
    try:
        return VectorMigrationStatus.model_validate(raw)
    except ValidationError:
        return VectorMigrationStatus()  # unreadable status: the journal in the database still knows


def _resource_of(body: Mapping[str, Any]) -> VectorMigration:
    """The resource as the models read it (status left out); raises ValidationError."""
    return VectorMigration.model_validate({key: body[key] for key in ("apiVersion", "kind", "metadata", "spec")})


def _done(
    status: VectorMigrationStatus, outcome: Outcome, previous: Phase, consumed: tuple[str, ...] = ()
) -> Reconciled:
    return Reconciled(merge_patch_of(status), outcome, previous, status.phase, consumed)


Progress = Callable[[Phase, VectorMigrationStatus, Outcome], Awaitable[None]]


async def reconcile(state: OperatorState, body: Mapping[str, Any], on_progress: Progress) -> Reconciled:
    """Run phases back to back until the migration waits, holds for a person, fails or is done.

    ``on_progress`` is called after every phase change (and after the last step), so the status
    a user watches moves with the migration rather than at the end of a long reconciliation.
    In order: the run (from memory, or prepared again), what the annotations decide, a finished or
    paused migration's answer, then the phases, each published as it moves.
    """
    meta = body.get("metadata") or {}
    uid, namespace, name = str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name"))
    annotations = meta.get("annotations") or {}
    generation = meta.get("generation")
    if state.client is not None and uid not in state.runs:
        # The event's body can be older than the object (events queue up behind a long
        # reconciliation; a status patch can be lost): with nothing in memory, read the live status.
        live = await state.client.read_migration(namespace, name)
        if live is not None:
            body = {**body, "status": live.get("status")}
    previous = _status_of(body)
    try:
        resource = _resource_of(body)
    except ValidationError as error:
        invalid = Fail(Reason.INVALID_SPEC, describe_validation_error(error))
        fail(previous, invalid.reason, invalid.message, generation)
        return _done(previous, invalid, previous.phase)
    client = state.client
    if client is None:
        return _done(previous, Wait(Reason.IN_PROGRESS, "the operator has not logged in yet", 2.0), previous.phase)
    found = await _run_of(state, resource, previous, (uid, namespace, name), generation)
    if isinstance(found, Reconciled):
        return found
    run, current = found
    run.decisions = _decisions_of(annotations)
    if request_rollback(run, f"the annotation {ANNOTATION_ROLLBACK}"):
        await on_progress(Phase.SUCCEEDED, run.status, Advance(Phase.ROLLING_BACK))
    early = await _finished_or_paused(state, run, uid, annotations, previous.phase, generation)
    if early is not None:
        return early
    if run.status.phase is Phase.PENDING:
        set_phase(run.status, Phase.CHECKLIST, "checking the database", generation)
        await on_progress(Phase.PENDING, run.status, Advance(run.status.phase))

    async def deleted(phase: Phase) -> Outcome | None:
        if phase not in _FINISH_WHEN_DELETED and await _being_deleted(client, namespace, name):
            return Hold(Reason.DELETED, f"the resource is being deleted; stopped before {phase.value}")
        return None

    publisher = _Publisher(client, resource, run, routed=current.cutover is not None, on_progress=on_progress)
    outcome = await drive(run, stop=deleted, observe=publisher.moved)
    return await _after_driving(state, client, run, resource, uid, outcome, previous.phase)


async def _run_of(
    state: OperatorState,
    resource: VectorMigration,
    current: VectorMigrationStatus,
    names: tuple[str, str, str],
    generation: Any,
) -> tuple[Migration, VectorMigrationStatus] | Reconciled:
    """The resource's run (kept in memory, or prepared again after a restart or a changed spec); or the answer now.

    With it, the status it started from: a fresh one when the spec changed after a failure.
    """
    uid, namespace, name = names
    previous = current.phase
    run = state.runs.get(uid)
    if run is not None and run.generation != generation:
        await state.forget(uid)  # a changed spec: plan again from what the database says
        run = None
    if run is None:
        if current.phase is Phase.FAILED and current.observed_generation != generation:
            current = VectorMigrationStatus()  # the spec changed after a failure: try again from the start
        prepared = await _prepare(state, resource, current, namespace, name, generation)
        if isinstance(prepared, Fail):
            fail(current, prepared.reason, prepared.message, generation)
            return _done(current, prepared, previous)
        run = state.runs[uid] = prepared
    return run, current


def _decisions_of(annotations: Mapping[str, Any]) -> Decisions:
    """What a person said, by annotation: the plan approved, a restore consented to, a rollback, a promotion."""
    return Decisions(
        approved_hash=annotations.get(ANNOTATION_APPROVE),
        restore_consent=annotations.get(ANNOTATION_RESTORE),
        rollback=str(annotations.get(ANNOTATION_ROLLBACK, "")).lower() == "true",
        promote=str(annotations.get(ANNOTATION_PROMOTE, "")).lower() == "true",
    )


async def _finished_or_paused(
    state: OperatorState, run: Migration, uid: str, annotations: Mapping[str, Any], previous: Phase, generation: Any
) -> Reconciled | None:
    """A finished migration's answer (and what it keeps until due), or a paused one's; None: run its phases."""
    if run.status.phase.terminal:
        kept = await _what_is_kept_until_due(state, run)
        await state.forget(uid)
        return _done(run.status, kept or Hold(Reason.SUCCEEDED, run.status.message), previous)
    if str(annotations.get(ANNOTATION_PAUSED, "")).lower() == "true":
        await close_session(run)
        paused = Hold(Reason.PAUSED, f"paused by the annotation {ANNOTATION_PAUSED} in phase {run.status.phase.value}")
        hold(run.status, paused.reason, paused.message, generation)
        return _done(run.status, paused, previous)
    return None


@dataclass
class _Publisher:
    """What the operator publishes as a migration moves, before the status says so."""

    client: KubeClient
    resource: VectorMigration
    run: Migration
    routed: bool  # a routing ConfigMap was published: it must follow to the end
    on_progress: Progress

    async def moved(self, before: Phase, outcome: Outcome) -> None:
        """After each step: the routing, the target's Secret, the report, then the status."""
        run, resource = self.run, self.resource
        if run.status.cutover is not None or self.routed:
            # Routing first: whoever reads a status that says "paused at 50%" finds the ConfigMap at 50%,
            # and one that says "rolled back" finds every read sent to the application's own tables.
            self.routed = True
            await self.client.apply_configmap(build_cutover_configmap(resource, run.status))
        if run.inputs.target_server is not None:  # where the database is, before the status says so
            await publish_target_secret(self.client, resource, run.status, run.inputs.target_server)
        if run.status.phase.terminal or (isinstance(outcome, Hold) and run.status.phase is Phase.VERIFY):
            # the numbers for the change ticket, once there is an outcome or a person must decide
            await self.client.apply_configmap(build_report_configmap(resource, run.status))
        await self.on_progress(before, run.status, outcome)


async def _after_driving(
    state: OperatorState,
    client: KubeClient,
    run: Migration,
    resource: VectorMigration,
    uid: str,
    outcome: Outcome,
    previous: Phase,
) -> Reconciled:
    """Where the phases stopped: the plan published for approval, sessions closed while people decide."""
    if isinstance(outcome, Hold) and outcome.reason is not Reason.DELETED and run.facts.plan is not None:
        await _publish_plan(client, resource, run)
    consumed = (ANNOTATION_PROMOTE,) if run.facts.promotion_used else ()
    run.facts.promotion_used = False
    if isinstance(outcome, Hold | Fail) or run.status.phase.terminal:
        await close_session(run)  # between phases that wait on people, hold no lock and no connection
    if isinstance(outcome, Wait) and outcome.reason is Reason.DATABASE_UNAVAILABLE:
        await close_session(run)
    if run.status.phase.terminal:
        state.runs.pop(uid, None)
        if isinstance(outcome, Advance):
            outcome = await _what_is_kept_until_due(state, run) or outcome
    return _done(run.status, outcome, previous, consumed)


async def _what_is_kept_until_due(state: OperatorState, run: Migration) -> Outcome | None:
    """A succeeded migration may keep something until it is due (Parallel's old tables, Replicate's old database).

    Until then the reconciliation ends (a Hold, not a retry kopf would sleep through): a person's
    rollback annotation is acted on at once, and the timer (clean_up_when_due) removes it when due.
    """
    if run.status.phase is not Phase.SUCCEEDED:
        return None
    leftovers = strategy_of(run.spec).leftovers
    remaining = leftovers.due_in(run.status) if leftovers is not None else None
    if leftovers is None or remaining is None:
        return None
    if remaining > 0:
        return Hold(Reason.OLD_TABLES_KEPT, leftovers.kept_for(remaining))
    opened = await open_session(run) if run.conn is None else None
    if opened is not None:
        return opened
    try:
        message = await leftovers.clean_up(run)
    finally:
        await close_session(run)
    set_phase(run.status, Phase.SUCCEEDED, f"{run.status.message}; {message}", run.generation)
    return None


# Deleting a resource stops its migration at the next phase boundary, except that a committed swap
# still gets its indexes (or its rollback): the tables are not left without what the application had.
_FINISH_WHEN_DELETED = frozenset({Phase.REINDEX, Phase.ROLLING_BACK})


async def _being_deleted(client: KubeClient, namespace: str, name: str) -> bool:
    live = await client.read_migration(namespace, name)
    return live is None or bool((live.get("metadata") or {}).get("deletionTimestamp"))


async def release(state: OperatorState, body: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What deletion does once any reconciliation in flight has returned; the events to post.

    The database session closes (its migration lock goes with it); owned Jobs and the plan
    ConfigMap go with their owner reference; the backup stays unless the resource says otherwise.
    """
    meta = body.get("metadata") or {}
    await state.forget(str(meta.get("uid")))
    if str((meta.get("annotations") or {}).get(ANNOTATION_DELETE_BACKUP, "")).lower() != "true":
        return []
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    volume = ((body.get("spec") or {}).get("backup") or {}).get("volume")
    if volume:
        return [("Warning", Reason.BACKUP_KEPT.value, f"{ANNOTATION_DELETE_BACKUP} is set, but the backup is on a "
                 "volume the operator did not create (spec.backup.volume); delete it yourself")]  # fmt: skip
    if state.client is None:
        return []
    claim = object_name(name, "backup")
    await state.client.delete_claim(namespace, claim)
    return [("Normal", Reason.BACKUP_DELETED.value, f"deleted the backup claim {claim} ({ANNOTATION_DELETE_BACKUP})")]


async def _prepare(
    state: OperatorState,
    resource: VectorMigration,
    status: VectorMigrationStatus,
    namespace: str,
    name: str,
    generation: int | None,
) -> Migration | Fail:
    """An engine run for the resource, with credentials from its Secret."""
    assert state.client is not None  # noqa: S101 - checked by the caller
    secret_ref = resource.spec.database.secret_ref
    if secret_ref is None:
        return Fail(Reason.INVALID_SPEC, "spec.database.secretRef is required when the operator runs a migration")
    credentials = await secret_data(state.client, namespace, secret_ref.name)
    if isinstance(credentials, Fail):
        return credentials
    ca = ca_source(resource, credentials)
    ca_pem = await ca_certificate(state.client, namespace, ca, secret_ref.name, credentials)
    if isinstance(ca_pem, Fail):
        return ca_pem
    try:
        params = params_from_secret(credentials, resource.spec.database.ssl_mode, ca_pem)
    except ConnectionError_ as error:
        return Fail(Reason.SECRET_UNAVAILABLE, f"secret {namespace}/{secret_ref.name}: {error}")
    admin_ref = resource.spec.database.admin_secret_ref
    admin = await admin_login(state.client, namespace, admin_ref.name, params) if admin_ref is not None else None
    if isinstance(admin, Fail):
        return admin
    target = await target_server_login(state.client, resource, namespace, ca_pem, secret_data)
    if isinstance(target, Fail):
        return target
    target_ref = resource.spec.replicate.target
    inputs = RunInputs(
        f"{namespace}/{name}",
        resource.spec,
        params,
        backup=JobBackup(
            state.client,
            resource,
            secret_ref.name,
            state.job_defaults,
            ca,
            admin_ref.name if admin_ref else None,
            target_ref.secret_ref.name if target is not None and target_ref is not None else None,
            secret_has_password="password" in credentials,
        ),
        generation=generation,
        admin_params=admin,
        target_server=target,
    )
    if state.scratch is not None:
        inputs = dataclasses.replace(inputs, scratch=state.scratch)
    return Migration(inputs, status=status)


def _succeeded(state: OperatorState, body: Mapping[str, Any]) -> tuple[VectorMigration, VectorMigrationStatus] | None:
    """A succeeded migration's resource and status, for the timer's work (None: not succeeded, or unreadable)."""
    status = _status_of(body)
    if status.phase is not Phase.SUCCEEDED or state.client is None:
        return None
    try:
        return _resource_of(body), status
    except ValidationError:
        return None


async def clean_up_when_due(state: OperatorState, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """A succeeded migration's leftovers, removed once due (the timer's): the status to write, or None."""
    meta = body.get("metadata") or {}
    succeeded = _succeeded(state, body)
    if succeeded is None:
        return None
    resource, status = succeeded
    remaining = leftovers_due_in(strategy_of(resource.spec), status)
    if remaining is None or remaining > 0 or str(meta.get("uid")) in state.runs:
        return None  # nothing due, or a reconciliation holds the migration now
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    run = await _prepare(state, resource, status, namespace, name, meta.get("generation"))
    if isinstance(run, Fail) or await _what_is_kept_until_due(state, run) is not None:
        return None  # the next tick tries again
    return merge_patch_of(run.status)


@dataclass(frozen=True)
class DriftFound:
    """A drift check's result: the status with its Drifted condition, and the message when it has just drifted."""

    status: VectorMigrationStatus
    strategy: str
    newly_drifted: str | None

    @property
    def conditions(self) -> list[dict[str, Any]]:
        """The conditions to write."""
        return list(merge_patch_of(self.status).get("conditions", []))


async def check_for_drift(state: OperatorState, body: Mapping[str, Any]) -> DriftFound | None:
    """Re-check a succeeded migration's database once its driftCheck interval has passed (a read).

    None when nothing is due or the database cannot be read now (the next check tries again).
    """
    meta = body.get("metadata") or {}
    uid, namespace, name = str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name"))
    succeeded = _succeeded(state, body)
    if succeeded is None:
        return None
    resource, status = succeeded
    interval = resource.spec.drift_check.seconds
    now = time.monotonic()
    if interval is None or now - state.drift_checked.get(uid, -interval) < interval:
        return None
    state.drift_checked[uid] = now
    run = await _prepare(state, resource, VectorMigrationStatus(), namespace, name, meta.get("generation"))
    if isinstance(run, Fail):
        return None
    try:
        found = await check_once(run)
    except (DatabaseUnavailable, asyncpg.PostgresError, OSError):
        return None
    if not found.migrated:
        return None
    newly = record_drift(status, found.differences, found.message)
    return DriftFound(status, resource.spec.strategy.value, found.message if newly else None)


async def _publish_plan(client: KubeClient, resource: VectorMigration, run: Migration) -> None:
    """The full plan in a ConfigMap, for a person to read before approving its hash."""
    assert run.facts.plan is not None  # noqa: S101 - checked by the caller
    await client.apply_configmap(build_plan_configmap(resource, run.facts.plan.as_document()))
