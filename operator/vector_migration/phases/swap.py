"""Swap: convert every column and swap the extension in one transaction, proven by checksums."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import asyncpg

from ..api import (
    TableVerification,
    Verification,
)
from ..database import table_copy
from ..database.catalog import (
    SourceInventory,
    read_extension,
)
from ..database.inventory import read_inventory
from ..database.measure import (
    table_checksum,
)
from ..database.surface import TargetSurface, discover
from ..engine import records
from ..engine.context import Migration
from ..engine.outcomes import Advance, Fail, Outcome
from ..engine.plan import PlanningError, Statement
from ..engine.strategy import PlanInputs, replan, strategy_of
from ..engine.transactions import (
    DataMismatch,
    PlanDrift,
    Progress,
    Ready,
    begin_bounded_transaction,
    execute,
    ready_to_change,
    roll_back,
    transaction_failure,
)
from ..status import record_timing, set_condition
from ..vocabulary import (
    ChecksumMode,
    ConditionType,
    Phase,
    Reason,
    StatementKind,
)
from .reindex import index_progress


async def convert(
    m: Migration,
    statements: list[Statement],
    inventory: SourceInventory,
    surface: TargetSurface,
    mode: ChecksumMode,
    progress: Progress,
    exports: Path | None = None,
) -> list[TableVerification]:
    """Run a plan's statements inside the caller's transaction, checksumming every table under the lock.

    Raises DataMismatch when any table's rows or content differ after the conversion, so the
    caller's transaction rolls back instead of committing a lossy change.
    """
    conn = m.session
    before: dict[tuple[str, str], Any] = {}
    for number, statement in enumerate(statements, start=1):
        progress.step = statement.step
        m.reporter.progress("swap", number - 1, len(statements), statement.step)
        building = statement.step.builds_index
        if statement.step.copies:
            await _copy(m, statement, exports, progress)
            continue
        async with index_progress(m, statement.sql if building else None):
            await execute(m, statement)
        if statement.step is StatementKind.CREATE_TARGET_EXTENSION:
            real = await discover(conn, surface.extension, m.facts.source_library, collides=surface.collides)
            if real.summary() != surface.summary():
                raise PlanDrift("the target extension differs from the one the plan was made for")
        if statement.step is StatementKind.LOCK:
            progress.locked_at = time.perf_counter()
            progress.step = "checksum-before"
            for schema, table in inventory.tables():
                names = {c.column for c in inventory.columns_of(schema, table)}
                before[(schema, table)] = await table_checksum(conn, schema, table, names, mode)
    progress.step = "checksum-after"
    tables = []
    for schema, table in inventory.tables():
        names = {c.column for c in inventory.columns_of(schema, table)}
        after = await table_checksum(conn, schema, table, names, mode)
        was = before[(schema, table)]
        tables.append(was.against(f"{schema}.{table}", after))
        if (after.rows, after.checksum) != (was.rows, was.checksum):
            raise DataMismatch(
                f"{schema}.{table}: {was.rows} rows/{was.checksum} before, {after.rows} rows/{after.checksum} after"
            )
    return tables


async def _copy(m: Migration, statement: Statement, exports: Path | None, progress: Progress) -> None:
    """One Rebuild COPY step: the table named in the plan's statement, out to or in from its file."""
    if exports is None or statement.table is None:
        raise PlanDrift("the plan copies tables but this run has no export area")
    schema, table = statement.table
    fmt = m.facts.copy_format
    if statement.step is StatementKind.EXPORT:
        size = await table_copy.export_table(m.session, exports, schema, table, fmt)
        progress.exported_bytes += size
    else:
        await table_copy.import_table(m.session, exports, schema, table, fmt, statement.run_as)


async def run_swap(m: Migration) -> Outcome:
    """Convert every column and swap the extension in one transaction, proven by checksums."""
    conn = m.session
    done = records.already_done(m, await records.read(conn, m.name))
    if done is not None:
        return done
    ready = ready_to_change(m, "the swap")
    if not isinstance(ready, Ready):
        return ready
    plan, inventory, surface = ready.plan.conversion, ready.inventory, ready.surface
    facts = m.facts
    progress = Progress()
    transaction = await begin_bounded_transaction(m)
    try:
        progress.step = "re-plan"
        await check_plan_unchanged(m, ready)
        with strategy_of(m.spec).scratch_area(m) as exports:
            tables = await convert(m, list(plan.swap), inventory, surface, facts.checksum_mode, progress, exports)
        verification = m.status.verification or Verification(k=m.spec.verify.k)
        verification.tables = tables
        verification.checksum_mode = facts.checksum_mode
        m.status.verification = verification
        record_timing(m.status, "writeBlockedSeconds", progress.blocked_seconds)
        progress.step = "journal"
        facts.rebuilds = [records.IndexBuild.of(r) for r in plan.rebuilds] + [
            records.IndexBuild(
                index_schema=schema, name=name, table=table, method=method, definition=sql, concurrent=True
            )
            for schema, name, table, method, sql in plan.carried_concurrent
        ]
        facts.tables = inventory.tables()
        facts.swap_loaded = True
        await records.write(conn, m.name, records.SWAPPED, ready.plan.plan_hash, records.swap_record(m))
        progress.step = "commit"
        await transaction.commit()
    except PlanDrift as error:
        await roll_back(transaction)
        return replan_after_drift(m, error)
    except DataMismatch as error:
        await roll_back(transaction)
        if facts.checksum_mode.cheap:
            # The target sent or printed some value differently from the sample: compare parsed values.
            cheap, facts.checksum_mode = facts.checksum_mode, ChecksumMode.NORMALIZED
            return Advance(Phase.SWAP, f"{cheap} checksums differ ({error}); retrying with value checksums")
        return Fail(Reason.DATA_MISMATCH, f"content changed during conversion ({error}); the swap rolled back")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await roll_back(transaction)
        return transaction_failure(error, progress, m.spec, "swap")
    m.reporter.task_done("swap")
    message = (
        f"{inventory.source.name} → {surface.extension} ({plan.route} route); "
        f"writes blocked {m.status.timings['writeBlockedSeconds']:.2f}s; checksums equal"
        + (f"; {progress.exported_bytes} bytes exported and imported ({facts.copy_format} COPY)"
           if progress.exported_bytes else "")
    )  # fmt: skip
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, True, Reason.COMPLETED, message, m.generation)
    return Advance(Phase.REINDEX, message)


async def check_plan_unchanged(m: Migration, ready: Ready) -> None:
    """Inside the changing transaction: the plan the database gives now is the approved one, else PlanDrift."""
    conn = m.session
    fresh = await read_inventory(conn, m.spec, ready.inventory.server, ready.inventory.source, count_rows=False)
    if fresh.blockers:
        raise PlanDrift(f"the database changed since the checklist: {fresh.blockers[0].message}")
    inputs = PlanInputs(
        fresh,
        ready.surface,
        m.target_schema(ready.inventory),
        await read_extension(conn, ready.surface.extension) is not None,
        m.facts.copy_format,
    )
    try:
        replanned = await replan(m, inputs)
    except PlanningError as error:
        raise PlanDrift(f"the database changed since the checklist: {error}") from None
    if replanned.plan_hash != m.status.plan_hash:
        raise PlanDrift(f"the database changed since the checklist (plan {replanned.plan_hash})")


def replan_after_drift(m: Migration, error: PlanDrift) -> Outcome:
    """After a transaction found the database changed under the plan (and rolled back): plan again, twice at most."""
    m.facts.replans += 1
    if m.facts.replans > 2:
        return Fail(Reason.PLAN_CHANGED, f"{error}; the plan keeps changing, nothing was changed")
    m.facts.plan = None
    return Advance(Phase.CHECKLIST, f"{error}; nothing changed, re-planning")
