"""Small named mutations of a VectorMigrationStatus, following Kubernetes condition conventions.

The engine changes status only through these, so lastTransitionTime moves only when a
condition's status really changes and the kstatus summary (Ready, Reconciling, Stalled) is
always derived the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .api import Condition, VectorMigrationStatus
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
