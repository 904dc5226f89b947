"""InPlace: one transaction converts each column where it is and swaps the extension.

Writes wait for the length of that transaction (the rewrite of every vector table); nothing is
left behind, and a rollback is the same conversion backwards. The plan is the conversion's
statements (engine.conversion) as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..engine.context import PhaseFunction
from ..engine.strategy import ConvertingStrategy
from ..phases.approval import run_awaiting_approval
from ..phases.backup import run_backup_phase
from ..phases.checklist import run_checklist
from ..phases.reindex import run_reindex
from ..phases.rollback import run_rollback
from ..phases.swap import run_swap
from ..phases.verify import run_verify
from ..vocabulary import Phase, Strategy

# The phases of a one-transaction conversion (InPlace and Rebuild).
CONVERTING_PHASES: Mapping[Phase, PhaseFunction] = {
    Phase.PENDING: run_checklist,
    Phase.CHECKLIST: run_checklist,
    Phase.BACKUP: run_backup_phase,
    Phase.AWAITING_APPROVAL: run_awaiting_approval,
    Phase.SWAP: run_swap,
    Phase.REINDEX: run_reindex,
    Phase.VERIFY: run_verify,
    Phase.ROLLING_BACK: run_rollback,
}


class InPlace(ConvertingStrategy):
    """Convert the columns where they are, in one transaction."""

    kind = Strategy.IN_PLACE
    phases = CONVERTING_PHASES
