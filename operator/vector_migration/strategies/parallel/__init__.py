"""Parallel: the application keeps writing while its tables move to the target.

Each table gets a *shadow* with the target's types beside it. A trigger on the table (installed
in the same transaction that creates the shadow, so before the backfill reads a single row)
applies every INSERT, UPDATE, DELETE and TRUNCATE to the shadow in the writer's own transaction;
the backfill copies the existing rows in keyset batches that lock the rows they copy (FOR SHARE),
so a row deleted or updated while its batch runs is never resurrected or copied stale. Because the
trigger is synchronous, *any* snapshot sees the table and its shadow equal: verification compares
their checksums in one REPEATABLE READ transaction while writes go on.

The finalize is one short transaction: lock both tables, drop the trigger, rename the table to
``<table>_pgvector_old`` and the shadow to the table's name, and install the reverse trigger, which
keeps the old table in sync until ``parallel.keepOldFor`` has passed. So a swap back loses nothing;
after that, the old tables and the source extension are dropped (RESTRICT).

Every statement of that (shadow DDL, trigger bodies, backfill batch, builds, finalize, cleanup) is
in the plan (plan.py), hashed and approved like InPlace's.

Phases: Checklist, Backup, (approval), Swap (create the shadows and triggers: shadow.py), Backfill
and Reindex (backfill.py), Verify (verify.py), Cutover (cutover.py), Finalize (finalize.py), and
Rolling back (rollback.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from ...api import VectorMigrationStatus
from ...database.catalog import Blocker, SourceInventory
from ...database.locks import REPLICATE_NEEDS_FEWER, lock_blockers, lock_table, relations_locked
from ...database.surface import TargetSurface
from ...engine import records
from ...engine.context import Migration, PhaseFunction
from ...engine.conversion import build_plan
from ...engine.outcomes import Advance, Outcome
from ...engine.plan import MigrationPlan, StrategyPlan
from ...engine.records import Journal
from ...engine.strategy import PlanInputs
from ...phases.approval import run_awaiting_approval
from ...phases.backup import run_backup_phase
from ...phases.checklist import run_checklist
from ...vocabulary import Phase, ReindexMode, Strategy
from .backfill import run_backfill, run_shadow_reindex
from .checks import check_tables
from .cutover import run_cutover
from .facts import read_table_facts
from .finalize import drop_old_tables, run_finalize, seconds_until_old_tables_go
from .plan import build_parallel_plan
from .recorded import shadows_recorded
from .rollback import run_parallel_rollback
from .shadow import run_prepare
from .verify import run_shadow_verify

PARALLEL_PHASES: Mapping[Phase, PhaseFunction] = {
    Phase.PENDING: run_checklist,
    Phase.CHECKLIST: run_checklist,
    Phase.BACKUP: run_backup_phase,
    Phase.AWAITING_APPROVAL: run_awaiting_approval,
    Phase.SWAP: run_prepare,
    Phase.BACKFILL: run_backfill,
    Phase.REINDEX: run_shadow_reindex,
    Phase.VERIFY: run_shadow_verify,
    Phase.CUTOVER: run_cutover,
    Phase.FINALIZE: run_finalize,
    Phase.ROLLING_BACK: run_parallel_rollback,
}


class Parallel:
    """Shadow tables kept in sync while the application writes; a rename swaps them in."""

    kind = Strategy.PARALLEL
    phases = PARALLEL_PHASES
    # Once the shadows exist a failure leaves them (and, after the finalize, the old tables) in place.
    undo_on_failure = frozenset({Phase.BACKFILL, Phase.REINDEX, Phase.VERIFY, Phase.CUTOVER, Phase.FINALIZE})
    # Until the finalize the application still runs on pgvector: a person may abort at once.
    abortable = frozenset({Phase.BACKFILL, Phase.REINDEX, Phase.VERIFY, Phase.CUTOVER})

    def resume(self, m: Migration, recorded: Journal) -> Outcome | None:
        """After the finalize committed: check its result; after the prepare: continue the backfill."""
        prepared = shadows_recorded(recorded)
        if prepared is None:
            return None
        if records.FINALIZED in recorded:
            return Advance(Phase.FINALIZE, "the finalize had already committed; checking the migrated tables")
        return Advance(Phase.BACKFILL, "the shadow tables already exist; continuing with the backfill")

    def convert(self, m: Migration, inputs: PlanInputs) -> MigrationPlan:
        """The columns' and indexes' mapping (reindex.mode does not apply: the shadows are built as Parallel does)."""
        spec = m.spec.model_copy(deep=True)
        spec.reindex.mode = ReindexMode.ATOMIC
        return build_plan(
            inputs.inventory,
            inputs.surface,
            spec,
            target_schema=inputs.target_schema,
            target_installed=inputs.target_installed,
        )

    async def check(self, m: Migration, inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
        """Tables that cannot move through a shadow, names the migration needs that are taken, and the locks.

        The finalize holds each table and its shadow (with their indexes, TOAST and dependents) in one transaction.
        """
        blockers = await check_tables(m.session, inventory, surface)
        locks = 2 * await relations_locked(m.session, inventory.tables())
        finalize = lock_blockers(
            await lock_table(m.session), locks, "the finalize's one transaction", REPLICATE_NEEDS_FEWER
        )
        return [*blockers, *finalize]

    async def plan(self, m: Migration, inputs: PlanInputs, conversion: MigrationPlan) -> StrategyPlan:
        """Every statement of the shadows, the sync triggers, the backfill and the finalize."""
        tables = []
        for schema, table in inputs.inventory.tables():
            vector_columns = [c.column for c in inputs.inventory.columns_of(schema, table)]
            tables.append(await read_table_facts(m.session, schema, table, vector_columns))
        return build_parallel_plan(conversion, inputs.surface, tables, m.name, inputs.inventory.source.name)

    def kept_after_failure(self, phase: Phase) -> str:
        """Before the finalize the application's tables are untouched; after it, the data is on the target."""
        if phase is Phase.FINALIZE:
            return "The migrated data is intact on the target"
        return "The application's tables are untouched and the shadows stay for inspection"

    database_move = None  # the new tables take the old ones' names in the same database

    @property
    def leftovers(self) -> OldTables:
        """The old tables, kept in sync until parallel.keepOldFor has passed."""
        return OldTables()


class OldTables:
    """Parallel's old tables after the finalize: kept in sync until parallel.keepOldFor, then dropped."""

    def due_in(self, status: VectorMigrationStatus) -> float | None:
        """Seconds until the old tables may go (parallel.keepOldFor)."""
        return seconds_until_old_tables_go(status)

    async def clean_up(self, m: Migration) -> str:
        """Drop the old tables, then the source extension."""
        return await drop_old_tables(m)

    def kept_for(self, remaining: float) -> str:
        """The old tables, kept in sync until keepOldFor has passed."""
        return f"the old tables stay for {remaining:.0f}s more (parallel.keepOldFor)"
