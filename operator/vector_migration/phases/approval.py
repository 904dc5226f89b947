"""Approval: go on only when a person approved the current plan's hash."""

from __future__ import annotations

from ..engine.context import Migration
from ..engine.outcomes import Advance, Hold, Outcome
from ..vocabulary import (
    Approval,
    Phase,
    Reason,
)


async def run_awaiting_approval(m: Migration) -> Outcome:
    """Proceed only when the approved hash is the current plan's."""
    current = m.status.plan_hash
    approved = m.decisions.approved_hash
    if approved is None:
        return Hold(Reason.AWAITING_APPROVAL, f"approval is Manual: review the plan and approve hash {current}")
    if approved != current:
        return Hold(
            Reason.AWAITING_APPROVAL,
            f"the approved hash {approved} is stale (the plan is now {current}); review and approve again",
        )
    return Advance(Phase.SWAP, f"plan {current} approved")


def next_after_backup(m: Migration) -> Phase:
    """The phase after the backup: approval when a person must approve the plan, else the swap."""
    return Phase.AWAITING_APPROVAL if m.spec.approval is Approval.MANUAL else Phase.SWAP
