"""Prepare: the target beside the source, a shadow per table and the sync triggers, in one transaction.

The statements are the approved plan's prepare stage. The transaction first locks the originals
(SHARE ROW EXCLUSIVE, which CREATE TRIGGER takes anyway), then derives the plan again under that
lock: a different hash means the database changed since the approval, and nothing is created.
"""

from __future__ import annotations

from dataclasses import asdict

import asyncpg

from ...api import ParallelStatus, ShadowTableStatus
from ...database import journal
from ...database.catalog import index_names
from ...database.catalog_compare import Expected
from ...database.measure import IndexTarget
from ...database.sql import qualify, quote_ident
from ...engine import continuation, records
from ...engine.context import Migration
from ...engine.invariant import CatalogLoss, catalog_after, catalog_before
from ...engine.outcomes import Advance, Outcome
from ...engine.records import Journal
from ...engine.transactions import (
    PlanDrift,
    Progress,
    Ready,
    begin_bounded_transaction,
    check_the_target_made,
    execute,
    ready_to_change,
    roll_back,
    transaction_failure,
)
from ...phases.swap import catalog_lost, check_plan_unchanged, replan_after_drift
from ...status import record_parallel, set_condition
from ...vocabulary import ConditionType, Phase, Reason, StatementKind, TransactionStep
from .plan import ParallelPlan
from .recorded import ShadowRecord, ShadowTable, shadows_recorded

# A phase after the shadows were made, run where the journal records none: plan again from the start.
START_OVER = Advance(Phase.CHECKLIST, "no shadow tables are recorded; starting from the checklist")


async def recorded_shadows(m: Migration) -> tuple[Journal, list[ShadowTable] | None]:
    """The journal, and the shadow tables it records (None before they exist), with the run's facts loaded."""
    recorded = await records.read(m.session, m.name)
    prepared = shadows_recorded(recorded)
    if prepared is None:
        return recorded, None
    if not m.facts.swap_loaded:
        continuation.load_swap_record(m, prepared, recorded.plan_hash(records.PREPARED))
        set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.IN_PROGRESS, "", m.generation)
    tables = prepared.shadows
    if records.FINALIZED not in recorded:
        for table in tables:
            if table.original_indexes is None:  # schemaVersion 1: the names were read at the finalize
                table.original_indexes = await index_names(m.session, qualify(table.table_schema, table.table))
    return recorded, tables


async def run_prepare(m: Migration) -> Outcome:
    """Run the plan's prepare stage in one transaction, after checking the plan still holds."""
    _, shadows = await recorded_shadows(m)
    if shadows is not None:
        return Advance(Phase.BACKFILL, "the shadow tables already exist; continuing with the backfill")
    ready = ready_to_change(m, "creating the shadow tables")
    if not isinstance(ready, Ready):
        return ready
    plan = ready.plan
    if not isinstance(plan, ParallelPlan):
        return Advance(Phase.CHECKLIST, "re-planning before creating the shadow tables")
    progress = Progress()
    transaction = await begin_bounded_transaction(m)
    try:
        await _prepare(m, plan, ready, progress)
        progress.step = TransactionStep.JOURNAL
        await _record_shadows(m, plan, ready)
        progress.step = TransactionStep.COMMIT
        await transaction.commit()
    except PlanDrift as error:
        await roll_back(transaction)
        return replan_after_drift(m, error)
    except CatalogLoss as error:
        await roll_back(transaction)
        return await catalog_lost(m, error, "preparation")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await roll_back(transaction)
        return transaction_failure(error, progress, m.spec, "shadow")
    message = (
        f"{len(plan.tables)} shadow table(s) with {ready.surface.extension}'s types beside the originals; "
        "triggers keep them in sync from now on"
    )
    return Advance(Phase.BACKFILL, message)


async def _prepare(m: Migration, plan: ParallelPlan, ready: Ready, progress: Progress) -> None:
    """The prepare stage under its locks, once the plan is proven to hold: it may add only what is the migration's.

    The shadows (and what is theirs) and the target extension are new; anything else of the catalog
    that differs when the stage ends is a loss (CatalogLoss), and the transaction must not commit.
    """
    conn = m.session
    statements = list(plan.prepare)
    catalog = await catalog_before(conn, progress)
    for statement in (s for s in statements if s.step is StatementKind.LOCK):
        progress.step = TransactionStep.LOCK
        await execute(m, statement)
    progress.step = TransactionStep.RE_PLAN
    await check_plan_unchanged(m, ready)
    await journal.ensure(conn)  # the schema the sync functions live in
    for statement in statements:
        if statement.step is StatementKind.LOCK:
            continue
        progress.step = statement.step
        await execute(m, statement)
        await check_the_target_made(m, statement, ready.surface)
    shadows = frozenset(qualify(t.shadow.table_schema, t.shadow.shadow) for t in plan.tables)
    target = {f"extension {quote_ident(ready.surface.extension)}": "the target extension"}
    target[f"schema {quote_ident(m.target_schema(ready.inventory))}"] = "the target extension's schema"
    await catalog_after(conn, catalog, Expected(added=target, own=shadows), progress)


async def _record_shadows(m: Migration, plan: ParallelPlan, ready: Ready) -> None:
    """Point the probes at the shadows, show them in the status, and journal them (in the transaction)."""
    facts = m.facts
    shadows = [t.shadow for t in plan.tables]
    facts.rebuilds = []
    facts.swap_loaded = True
    by_original = {(t.table_schema, i.original): (t.shadow, i.name) for t in shadows for i in t.vector_indexes}
    for probe in facts.probes:
        shadow_table, shadow_index = by_original[(probe.after.schema, probe.index)]
        probe.after = IndexTarget(**{**asdict(probe.after), "table": shadow_table, "index_name": shadow_index})
    record_parallel(
        m.status,
        ParallelStatus(
            tables=[
                ShadowTableStatus(
                    name=t.name,
                    shadow=f"{t.table_schema}.{t.shadow}",
                    rows_total=ready.inventory.row_counts.get((t.table_schema, t.table), 0),
                )
                for t in shadows
            ]
        ),
    )
    created = any(s.step is StatementKind.CREATE_TARGET_EXTENSION for s in plan.setup)
    swapped = continuation.swap_record(m)
    functions = plan.conversion.functions
    record = ShadowRecord(
        **swapped.model_dump(by_alias=True, exclude={"schema_version"}),
        shadows=shadows,
        created_extension=created,
        functions=[records.RecordedStatement.of(s) for s in (*functions.drops, *functions.forward)],
        functions_back=[records.RecordedStatement.of(s) for s in functions.back],
        view_drops=[records.RecordedStatement.of(s) for s in plan.view_drops],
        view_creates=[records.RecordedStatement.of(s) for s in plan.view_creates],
        view_creates_back=[records.RecordedStatement.of(s) for s in plan.view_creates_back],
        functions_validated=[records.RecordedStatement.of(s) for s in functions.validate],
        materialized_moves=[records.RecordedStatement.of(s) for s in plan.materialized_moves],
    )
    await records.write(m.session, m.name, records.PREPARED, plan.plan_hash, record)
