"""InPlace: converts each column where it is and swaps the extension, in one transaction or in batches.

Writes wait for the length of that transaction (the rewrite of every vector table); nothing is
left behind, and a rollback is the same conversion backwards. The plan is the conversion's
statements (engine.conversion) as they are; with ``inPlace.tablesPerBatch`` it is those of each
batch of tables (batches.py), each batch its own transaction (swap.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from ...database.catalog import Blocker, SourceInventory
from ...database.locks import (
    CATALOG_AND_TARGET_LOCKS,
    REPLICATE_NEEDS_FEWER,
    extension_members,
    lock_blockers,
    lock_table,
    relations_locked,
)
from ...database.surface import TargetSurface
from ...engine.batching import groups, part_of
from ...engine.context import Migration, PhaseFunction
from ...engine.outcomes import Outcome
from ...engine.plan import MigrationPlan, StrategyPlan
from ...engine.records import IN_PLACE_BATCHES, Journal
from ...engine.strategy import ConvertingStrategy, PlanInputs, swap_lock_blockers
from ...phases.approval import run_awaiting_approval
from ...phases.backup import run_backup_phase
from ...phases.checklist import run_checklist
from ...phases.reindex import run_reindex
from ...phases.rollback import run_rollback
from ...phases.swap import run_swap
from ...phases.verify import run_verify
from ...vocabulary import Phase, Strategy
from .batches import BatchedPlan, batch_blockers, split
from .recorded import batches_recorded
from .swap import resume_batches, run_swap_in_batches

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

# What a refusal of the one transaction's locks offers instead, when the target can sit beside the source.
BATCHES_NEED_FEWER = (
    "or set inPlace.tablesPerBatch, so each batch of tables is a transaction of its own, or use strategy Replicate"
)


class InPlace(ConvertingStrategy):
    """Convert the columns where they are: in one transaction, or a batch of tables per transaction."""

    kind = Strategy.IN_PLACE
    phases: Mapping[Phase, PhaseFunction] = {**CONVERTING_PHASES, Phase.SWAP: run_swap_in_batches}

    def resume(self, m: Migration, recorded: Journal) -> Outcome | None:
        """After a committed swap: the reindex; after some committed batches: the next batch."""
        done = super().resume(m, recorded)
        record = batches_recorded(recorded)
        if done is not None or record is None:
            return done
        return resume_batches(m, record, recorded.plan_hash(IN_PLACE_BATCHES))

    async def plan(self, m: Migration, inputs: PlanInputs, conversion: MigrationPlan) -> StrategyPlan:
        """The conversion is the plan; in batches, each batch's part of it."""
        size = m.spec.in_place.tables_per_batch
        if size is None:
            return conversion
        batches = split(
            inputs.inventory, inputs.surface, m.spec, target_schema=inputs.target_schema,
            target_installed=inputs.target_installed, size=size,
        )  # fmt: skip
        return BatchedPlan(conversion, batches)

    async def check(self, m: Migration, inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
        """The locks of the one transaction, or of the largest batch, and what keeps batches from working."""
        size = m.spec.in_place.tables_per_batch
        if size is None:
            return await swap_lock_blockers(
                m, inventory, REPLICATE_NEEDS_FEWER if surface.collides else BATCHES_NEED_FEWER
            )
        blockers = batch_blockers(inventory, surface)
        # Each batch of tables, then the source's drop alone (batches.split): the largest of these.
        locks = [await relations_locked(m.session, part_of(inventory, tables, last=False).relations())
                 for tables in groups(inventory, size)]  # fmt: skip
        locks.append(await extension_members(m.session, inventory.source.name))
        instead = f"or set a smaller inPlace.tablesPerBatch (now {size}), or use strategy Replicate"
        largest = "the largest batch's transaction (or the one dropping the source extension)"
        table = await lock_table(m.session)
        return blockers + lock_blockers(table, max(locks) + CATALOG_AND_TARGET_LOCKS, largest, instead)
