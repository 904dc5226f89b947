"""Small named mutations of a VectorMigrationStatus, following Kubernetes condition conventions.

The engine changes status only through these (tests/test_layers.py finds any other assignment), so
lastTransitionTime moves only when a condition's status really changes, the kstatus summary
(Ready, Reconciling, Stalled) is always derived the same way, and a status is changed in place:
whoever holds it (the operator's run, the command line's reporter) sees every change.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from .api import (
    BackupStatus,
    Condition,
    CutoverStatus,
    Inventory,
    ParallelStatus,
    ReplicatedTable,
    ReplicateStatus,
    TableVerification,
    VectorMigrationStatus,
    Verification,
)
from .vocabulary import ConditionType, Phase, Reason

# Holds that a person's decision ends: Reconciling with the reason, never Stalled. kstatus keeps
# Stalled for "cannot progress without a change", so Flux would fail a wait at once; Argo CD shows
# these as Suspended, as it shows a paused Rollout (deploy/gitops/argocd-health.lua lists the same).
WAITING_ON_A_PERSON = frozenset(
    {
        Reason.AWAITING_APPROVAL,
        Reason.PAUSED,
        Reason.CUTOVER_PAUSED,
        Reason.AWAITING_PROMOTION,
        Reason.RESTORE_NEEDS_CONSENT,
        Reason.VERIFICATION_INCONCLUSIVE,
    }
)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # RFC 3339 UTC with second precision, as Kubernetes writes times


def now(later_by: timedelta = timedelta(0)) -> str:
    """The time now (or ``later_by`` from now) as Kubernetes writes timestamps."""
    return (datetime.now(UTC) + later_by).strftime(TIME_FORMAT)


def seconds_since(stamp: str) -> float:
    """Seconds from a timestamp written by :func:`now` until now (negative when it is ahead)."""
    return (datetime.now(UTC) - datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=UTC)).total_seconds()


def set_condition(
    status: VectorMigrationStatus,
    kind: ConditionType,
    value: bool | None,
    reason: Reason,
    message: str = "",
    generation: int | None = None,
) -> None:
    """Set one condition; keep lastTransitionTime unless the True/False/Unknown value changes."""
    text = "Unknown" if value is None else ("True" if value else "False")
    for index, condition in enumerate(status.conditions):
        if condition.type == kind.value:
            changed = condition.status != text
            status.conditions[index] = Condition(
                type=kind.value,
                status=text,
                reason=reason.value,
                message=message,
                last_transition_time=now() if changed else condition.last_transition_time,
                observed_generation=generation,
            )
            return
    status.conditions.append(
        Condition(
            type=kind.value,
            status=text,
            reason=reason.value,
            message=message,
            last_transition_time=now(),
            observed_generation=generation,
        )
    )


def condition(status: VectorMigrationStatus, kind: ConditionType) -> Condition | None:
    """The condition of a type, if set."""
    return next((c for c in status.conditions if c.type == kind.value), None)


def set_phase(status: VectorMigrationStatus, phase: Phase, message: str, generation: int | None = None) -> None:
    """Move to a phase and refresh the kstatus summary conditions."""
    status.phase = phase
    status.message = message
    status.observed_generation = generation
    summarize(status, Reason.IN_PROGRESS, message, generation)


def summarize(status: VectorMigrationStatus, reason: Reason, message: str, generation: int | None = None) -> None:
    """Ready/Reconciling/Stalled from the phase: success is Ready; a terminal failure is Stalled.

    Everything else, holds for a person included, is Reconciling with its reason.
    """
    if reason is Reason.DRY_RUN or (status.phase is Phase.ROLLED_BACK and reason is Reason.ROLLBACK_REQUESTED):
        # A dry run has done what its spec asks (a checked plan, published): kubectl wait and
        # GitOps health checks may move on, while phase and reason say that nothing was migrated.
        # A rollback a person asked for, once done, is likewise the state the resource asks for.
        set_condition(status, ConditionType.READY, True, reason, message, generation)
        set_condition(status, ConditionType.RECONCILING, False, reason, "", generation)
        set_condition(status, ConditionType.STALLED, False, reason, "", generation)
    elif status.phase is Phase.SUCCEEDED:
        set_condition(status, ConditionType.READY, True, Reason.SUCCEEDED, message, generation)
        set_condition(status, ConditionType.RECONCILING, False, Reason.SUCCEEDED, "", generation)
        set_condition(status, ConditionType.STALLED, False, Reason.SUCCEEDED, "", generation)
    elif status.phase in (Phase.FAILED, Phase.ROLLED_BACK):
        set_condition(status, ConditionType.READY, False, reason, message, generation)
        set_condition(status, ConditionType.RECONCILING, False, reason, "", generation)
        set_condition(status, ConditionType.STALLED, True, reason, message, generation)
    else:
        set_condition(status, ConditionType.READY, False, reason, message, generation)
        set_condition(status, ConditionType.RECONCILING, True, reason, message, generation)
        set_condition(status, ConditionType.STALLED, False, reason, "", generation)


def fail(status: VectorMigrationStatus, reason: Reason, message: str, generation: int | None = None) -> None:
    """Terminal failure: phase Failed, Stalled=True with the reason a person acts on."""
    status.phase = Phase.FAILED
    status.message = message
    status.observed_generation = generation
    summarize(status, reason, message, generation)


def hold(status: VectorMigrationStatus, reason: Reason, message: str, generation: int | None = None) -> None:
    """Waiting (for a lock, an approval, a retry): still Reconciling, not Ready, not Stalled."""
    status.message = message
    summarize(status, reason, message, generation)


def timing_key(phase: Phase) -> str:
    """The key of a phase's seconds in status.timings: Swap -> swapSeconds."""
    return f"{phase.value[0].lower()}{phase.value[1:]}Seconds"


def record_timing(status: VectorMigrationStatus, name: str, seconds: float) -> None:
    """Seconds spent in a phase or step, rounded for people."""
    status.timings[name] = round(seconds, 3)


def warn(status: VectorMigrationStatus, message: str) -> None:
    """Add a warning once."""
    if message not in status.warnings:
        status.warnings.append(message)


def record_drift(status: VectorMigrationStatus, differences: tuple[str, ...], message: str) -> bool:
    """A periodic drift check's finding, as the Drifted condition; True when it has just become drifted."""
    before = next((c.status for c in status.conditions if c.type == ConditionType.DRIFTED.value), None)
    drifted = bool(differences)
    set_condition(status, ConditionType.DRIFTED, drifted, Reason.DRIFTED if drifted else Reason.IN_SYNC, message)
    return drifted and before != "True"


def adopt(status: VectorMigrationStatus, recorded: VectorMigrationStatus) -> None:
    """Take a status the journal recorded, whole: every field replaced in place (a copy of it)."""
    for name in type(status).model_fields:
        setattr(status, name, copy.deepcopy(getattr(recorded, name)))


def adopt_swapped(status: VectorMigrationStatus, saved: VectorMigrationStatus, plan_hash: str) -> None:
    """What the swap recorded of the status, taken by a run that lost its memory after it."""
    status.plan_hash = plan_hash
    status.inventory = saved.inventory
    status.backup = status.backup or saved.backup
    status.verification = saved.verification
    for key, value in saved.timings.items():
        status.timings.setdefault(key, value)
    for message in saved.warnings:
        warn(status, message)


def record_plan(status: VectorMigrationStatus, plan_hash: str, inventory: Inventory) -> None:
    """The plan a person approves (its hash) and what it found in the database."""
    status.plan_hash = plan_hash
    status.inventory = inventory


def record_verification(status: VectorMigrationStatus, verification: Verification) -> None:
    """What verification measured so far (the baseline, the checksums, the recall and latency)."""
    status.verification = verification


def record_checksums(
    status: VectorMigrationStatus, k: int, tables: list[TableVerification], mode: str | None = None
) -> Verification:
    """Each table's checksums before and after, into the verification (made when there is none yet)."""
    verification = status.verification or Verification(k=k)
    verification.tables = tables
    if mode is not None:
        verification.checksum_mode = mode
    status.verification = verification
    return verification


def record_backup(status: VectorMigrationStatus, backup: BackupStatus) -> None:
    """The archive taken before anything changed, checked."""
    status.backup = backup


def set_cutover(status: VectorMigrationStatus, cutover: CutoverStatus | None) -> None:
    """The cutover's progress (None: no cutover, or none any more after a rollback)."""
    status.cutover = cutover


def record_parallel(status: VectorMigrationStatus, parallel: ParallelStatus) -> None:
    """Parallel's shadows, backfill, finalize and old tables."""
    status.parallel = parallel


def record_replicate(status: VectorMigrationStatus, replicate: ReplicateStatus | None) -> None:
    """Replicate's databases, replication and switchover."""
    status.replicate = replicate


def add_to_timing(status: VectorMigrationStatus, name: str, seconds: float) -> None:
    """Seconds added to a phase's total (a phase may run in several steps)."""
    status.timings[name] = round(status.timings.get(name, 0.0) + seconds, 3)


def set_message(status: VectorMigrationStatus, message: str) -> None:
    """What a person reads first, without moving the phase (summarize derives the conditions)."""
    status.message = message


def record_switchover(status: VectorMigrationStatus, seconds: float, forwards: bool) -> None:
    """Replicate's switchover done: how long writes were blocked, and which database is live."""
    if status.replicate is not None:
        status.replicate.switchover_seconds = seconds
        status.replicate.switched_over = forwards


def record_switched(
    status: VectorMigrationStatus, drop_old_after: str | None, seconds: float | None, tables: list[TableVerification]
) -> None:
    """Replicate's finalize: live on the new database, the old one following it until ``drop_old_after``."""
    replicate = status.replicate
    if replicate is not None:
        replicate.switched_over, replicate.reverse_replication = True, True
        replicate.drop_old_after = drop_old_after
        replicate.switchover_seconds = replicate.switchover_seconds or seconds
    if status.verification is not None and not status.verification.tables:
        status.verification.tables = tables


def record_replication_stopped(status: VectorMigrationStatus, old_database_dropped: bool) -> None:
    """After keepOldFor: the old database no longer follows (and is gone, when replicate.dropOld says so)."""
    if status.replicate is not None:
        status.replicate.replication_stopped, status.replicate.reverse_replication = True, False
        status.replicate.old_database_dropped = old_database_dropped


def record_replication_progress(
    status: VectorMigrationStatus, tables: list[ReplicatedTable], lag_bytes: int | None
) -> None:
    """Replicate's copy: each table's state and rows so far, and how far the new database trails."""
    if status.replicate is not None:
        status.replicate.tables = tables
        status.replicate.lag_bytes = lag_bytes
