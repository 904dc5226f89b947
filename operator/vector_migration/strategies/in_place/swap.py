"""InPlace's swap in batches: each approved batch in its own transaction, recorded in the journal as it commits.

The first batch runs only once the plan the database gives is still the approved one (the whole
plan's hash), and records every batch's statements with that hash. Each later batch is planned
again from the database as it is then, numbered from where the journal says the run is, and runs
only when it gives exactly the statements recorded: so a run cut off between batches (a crash, an
operator restart) continues at the next batch, and nothing runs that was not approved. The last
batch writes the swap's own record, and the migration goes on to the reindex as after one swap.

Each batch is checked as the one transaction is: its tables' checksums before and after under its
lock, and the whole catalog against what that batch changes. A batch that fails rolls back alone;
the batches before it stay committed, and are converted back (rollback.onFailure: Automatic) or
kept for a person (Manual).
"""

from __future__ import annotations

import dataclasses

import asyncpg

from ...api import VectorMigrationSpec
from ...database.catalog import read_extension, read_server
from ...database.inventory import read_inventory
from ...database.surface import TargetSurface
from ...engine import continuation, records
from ...engine.context import Migration
from ...engine.invariant import CatalogLoss, expected_of
from ...engine.outcomes import Advance, Fail, Outcome
from ...engine.records import IN_PLACE_BATCHES, RecordedStatement, SwapRecord, TableName
from ...engine.transactions import (
    DataMismatch,
    PlanDrift,
    Progress,
    Ready,
    begin_bounded_transaction,
    ready_to_change,
    roll_back,
    transaction_failure,
)
from ...phases.probe import ProbeFailed, probe_surface
from ...phases.swap import (
    after_mismatch,
    catalog_lost,
    check_plan_unchanged,
    convert,
    record_catalog,
    replan_after_drift,
    run_swap,
)
from ...status import record_checksums, record_timing, set_condition
from ...vocabulary import ConditionType, Phase, Reason, RollbackPolicy, Timing, TransactionStep
from .batches import Batch, BatchedPlan, split
from .recorded import BatchesRecord, RecordedBatch, batches_recorded


async def run_swap_in_batches(m: Migration) -> Outcome:
    """The swap: in one transaction, or (inPlace.tablesPerBatch) a batch of tables per transaction."""
    if m.spec.in_place.tables_per_batch is None:
        return await run_swap(m)
    recorded = await records.read(m.session, m.name)
    done = continuation.already_done(m, recorded)
    if done is not None:
        return done
    record = batches_recorded(recorded)
    if record is None:
        ready = ready_to_change(m, "the first batch")
        if not isinstance(ready, Ready):
            return ready
        if not isinstance(ready.plan, BatchedPlan):
            return Advance(Phase.CHECKLIST, "re-planning in batches")
        return await _first_batch(m, ready, ready.plan)
    surface = m.facts.surface or await _surface_now(m)
    if isinstance(surface, Fail):
        return surface
    return await _batches_after_the_first(m, record, recorded.plan_hash(IN_PLACE_BATCHES), surface)


async def _first_batch(m: Migration, ready: Ready, plan: BatchedPlan) -> Outcome:
    """The first batch, once the database still gives the approved plan."""
    m.facts.rebuilds = [records.IndexBuild.of(r) for r in plan.conversion.rebuilds] + [
        records.IndexBuild.carried(build) for build in plan.conversion.carried_concurrent
    ]
    m.facts.tables = ready.inventory.tables()
    swap = continuation.swap_record(m)
    record = BatchesRecord.model_validate(
        {
            **swap.model_dump(by_alias=True),
            "batches": [
                RecordedBatch(
                    tables=[TableName(table_schema=s, table=t) for s, t in batch.tables],
                    statements=[RecordedStatement.of(s) for s in batch.plan.swap],
                )
                for batch in plan.batches
            ],
        }
    )
    plan_hash = m.status.plan_hash or plan.plan_hash
    outcome = await _run_batch(m, plan.batches[0], ready.surface, record, plan_hash, ready=ready)
    return outcome or _committed(m, record, ready.surface)


async def _batches_after_the_first(
    m: Migration, record: BatchesRecord, plan_hash: str, surface: TargetSurface
) -> Outcome:
    """The next batch, planned again and run when it gives the recorded statements; SWAP again while more remain.

    A batch a phase: the status (and the resource, in the operator) says how many committed as it goes.
    """
    try:
        batch = await _next_batch(m, record, surface)
    except PlanDrift as error:
        failed = Fail(Reason.PLAN_CHANGED, f"{error}; the batch did not run, {_kept(record)}")
        return _after_a_batch_failed(m, record, failed)
    outcome = await _run_batch(m, batch, surface, record, plan_hash)
    return outcome or _committed(m, record, surface)


def _committed(m: Migration, record: BatchesRecord, surface: TargetSurface) -> Outcome:
    """After a batch committed: the next batch, or (after the last) the reindex."""
    total = len(record.batches)
    if record.committed < total:
        done = f"{record.committed} of {total} batch(es) committed"
        set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.IN_PROGRESS, done, m.generation)
        return Advance(Phase.SWAP, f"{done}; each its own transaction")
    m.reporter.task_done("swap")
    message = (
        f"{total - 1} batch(es) of at most {m.spec.in_place.tables_per_batch} table(s) converted to "
        f"{surface.extension}, then {m.spec.source.extension} dropped; checksums equal; "
        "writes to a batch's tables blocked "
        f"{m.status.timings.get(Timing.WRITE_BLOCKED.value, 0.0):.2f}s at most"
    )
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, True, Reason.COMPLETED, message, m.generation)
    return Advance(Phase.REINDEX, message)


async def _next_batch(m: Migration, record: BatchesRecord, surface: TargetSurface) -> Batch:
    """The next batch as the database gives it now: PlanDrift unless its statements and the rest are the recorded."""
    conn = m.session
    source = await read_extension(conn, m.spec.source.extension)
    if source is None:
        raise PlanDrift(f"extension {m.spec.source.extension} is gone between batches")
    fresh = await read_inventory(conn, _every_table(m), await read_server(conn), source, count_rows=False)
    if fresh.blockers:
        raise PlanDrift(f"the database changed between batches: {fresh.blockers[0].message}")
    size = m.spec.in_place.tables_per_batch or 1
    batches = split(
        fresh, surface, m.spec, target_schema=m.target_schema(fresh), target_installed=True, size=size,
        first=record.committed,
    )  # fmt: skip
    given = [[RecordedStatement.of(s) for s in batch.plan.swap] for batch in batches]
    if not batches or given != [batch.statements for batch in record.batches[record.committed :]]:
        raise PlanDrift(f"the database changed between batches: batch {record.committed + 1} is not the approved one")
    return batches[0]


# size: one transaction's steps and the five ways it ends, as the one swap's (phases/swap.py)
async def _run_batch(
    m: Migration,
    batch: Batch,
    surface: TargetSurface,
    record: BatchesRecord,
    plan_hash: str,
    ready: Ready | None = None,
) -> Outcome | None:
    """One batch's transaction, recorded as it commits; None once committed, else what its failure means."""
    conn, progress, last = m.session, Progress(), batch.number == len(record.batches) - 1
    transaction = await begin_bounded_transaction(m)
    try:
        if ready is not None:
            progress.step = TransactionStep.RE_PLAN
            await check_plan_unchanged(m, ready)
        # The type is renamed column by column (expected.column_types): the other batches' columns keep theirs.
        expected = dataclasses.replace(
            expected_of(
                batch.plan, batch.inventory, target_extension=surface.extension,
                target_schema=m.target_schema(batch.inventory), drops_source=last,
            ),
            types={},
        )  # fmt: skip
        m.reporter.progress("batches", batch.number, len(record.batches), TransactionStep.COMMIT)
        tables = await convert(
            m, list(batch.plan.swap), batch.inventory, surface, m.facts.checksum_mode, progress, expected=expected
        )
        checksums = [*record.checksums, *tables]
        record_checksums(m.status, m.spec.verify.k, checksums, m.facts.checksum_mode)
        planned = record.catalog_planned
        if progress.catalog is not None:  # what every batch changed as planned, and what the last found equal
            planned += progress.catalog.planned
            record_catalog(m, dataclasses.replace(progress.catalog, planned=planned))
        blocked = max(progress.blocked_seconds, m.status.timings.get(Timing.WRITE_BLOCKED.value, 0.0))
        record_timing(m.status, Timing.WRITE_BLOCKED, blocked)
        progress.step = TransactionStep.JOURNAL
        written = record.model_copy(
            update={
                "committed": batch.number + 1,
                "checksums": checksums,
                "catalog_planned": planned,
                "status": m.status.model_copy(deep=True),
            }
        )
        await records.write(conn, m.name, IN_PLACE_BATCHES, plan_hash, written)
        if last:
            swap = SwapRecord.model_validate(written.model_dump(by_alias=True))
            await records.write(conn, m.name, records.SWAPPED, plan_hash, swap)
            m.facts.swap_loaded = True
        progress.step = TransactionStep.COMMIT
        await transaction.commit()
        record.committed, record.checksums, record.catalog_planned = batch.number + 1, checksums, planned
        return None
    except PlanDrift as error:
        await roll_back(transaction)
        return replan_after_drift(m, error)  # the first batch only: the others raise it before they begin
    except DataMismatch as error:
        await roll_back(transaction)
        return _after_a_batch_failed(m, record, after_mismatch(m, error, progress))
    except CatalogLoss as error:
        await roll_back(transaction)
        if record.committed == 0:
            return await catalog_lost(m, error, "first batch")
        record_catalog(m, error.comparison)
        failed = Fail(Reason.CATALOG_MISMATCH, f"{error}; the batch rolled back, {_kept(record)}")
        return _after_a_batch_failed(m, record, failed)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await roll_back(transaction)
        outcome = transaction_failure(error, progress, m.spec, f"batch {batch.number + 1}", _kept(record))
        return _after_a_batch_failed(m, record, outcome)


def _kept(record: BatchesRecord) -> str:
    """What stays changed when a batch rolls back: nothing, or the batches before it."""
    if record.committed == 0:
        return "nothing changed"
    return f"{record.committed} of {len(record.batches)} batch(es) before it had committed"


def _after_a_batch_failed(m: Migration, record: BatchesRecord, outcome: Outcome) -> Outcome:
    """A batch rolled back: with none committed, nothing changed; else those committed go back, or stay for a person."""
    if record.committed == 0 or not isinstance(outcome, Fail):
        return outcome  # nothing changed yet, or a retry (a lock wait, a lost connection) continues from the journal
    m.facts.failure = outcome
    if m.spec.rollback.on_failure is RollbackPolicy.AUTOMATIC:
        return Advance(Phase.ROLLING_BACK, f"{outcome.message}. Converting them back (rollback.onFailure: Automatic).")
    return Fail(outcome.reason, f"{outcome.message}, and stay on the target; rollback.onFailure is Manual.")


async def _surface_now(m: Migration) -> TargetSurface | Fail:
    """The installed target's surface, for a run that continues between batches with no memory of the checklist."""
    conn = m.session
    source = await read_extension(conn, m.spec.source.extension)
    if source is None:
        return Fail(Reason.PLAN_CHANGED, f"extension {m.spec.source.extension} is gone between batches")
    server = await read_server(conn)
    inventory = await read_inventory(conn, _every_table(m), server, source, count_rows=False)
    mode = m.facts.checksum_mode
    try:
        surface = await probe_surface(m, inventory, m.target_schema(inventory), server.can_create_database)
    except ProbeFailed as error:
        return Fail(error.reason, str(error))
    m.facts.checksum_mode, m.facts.surface = mode, surface  # the mode the samples proved at the checklist
    return surface


def _every_table(m: Migration) -> VectorMigrationSpec:
    """The spec with no spec.tables: those of committed batches hold no vector column now.

    InPlace takes every column anyway (the checklist refused a selection leaving one out).
    """
    return m.spec.model_copy(update={"tables": []})


def resume_batches(m: Migration, record: BatchesRecord, plan_hash: str) -> Outcome:
    """A run that finds batches committed and the swap not: the facts of the first batch, then the next batch."""
    continuation.load_swap_record(m, record, plan_hash)
    m.facts.swap_loaded = False  # the swap's own record is written by the last batch
    done = f"{record.committed} of {len(record.batches)} batch(es) committed"
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.IN_PROGRESS, done, m.generation)
    return Advance(Phase.SWAP, f"{done}; continuing with the next")
