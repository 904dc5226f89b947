"""Swap: convert every column and swap the extension in one transaction, proven by checksums.

Where the transaction builds no index, the conversion is most of the time writes wait, and the
two checksums are the rest: the "before" one is then read ahead of the lock and proven current
under it (database.early_checksum), which leaves one full read of the table inside the window.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import asyncpg

from ..api import (
    CatalogCheck,
    TableVerification,
    Verification,
)
from ..database import table_copy
from ..database.catalog import (
    SourceInventory,
    read_extension,
)
from ..database.catalog_compare import Comparison, Expected
from ..database.early_checksum import EarlyChecksum, early_checksum, still_current
from ..database.inventory import read_inventory
from ..database.measure import (
    table_checksum,
)
from ..database.sql import set_timeouts
from ..database.surface import TargetSurface
from ..engine import continuation, records
from ..engine.context import Migration
from ..engine.invariant import CatalogLoss, catalog_after, catalog_before, changed_by_others, expected_of
from ..engine.outcomes import Advance, Fail, Outcome
from ..engine.plan import PlanningError, Statement
from ..engine.strategy import PlanInputs, replan
from ..engine.transactions import (
    DataMismatch,
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
from ..status import record_checksums, record_timing, record_verification, set_condition
from ..vocabulary import (
    ChecksumMode,
    ConditionType,
    Phase,
    Reason,
    StatementKind,
    Timing,
    TransactionStep,
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
    early: Mapping[tuple[str, str], EarlyChecksum] | None = None,
    expected: Expected | None = None,
) -> list[TableVerification]:
    """Run a plan's statements inside the caller's transaction, checksumming every table under the lock.

    A table's ``early`` checksum stands for its "before" one when the lock finds the same row
    versions it summed (progress.checksums_read_early counts them). Raises DataMismatch when
    any table's rows or content differ after the conversion, so the caller's transaction rolls
    back instead of committing a lossy change. With ``expected`` (what the plan changes) the
    whole catalog is read before the first statement and again after the last: CatalogLoss when
    anything else differs (progress.catalog holds the comparison).
    """
    conn = m.session
    before: dict[tuple[str, str], Any] = {}
    catalog = await catalog_before(conn, progress) if expected is not None else None
    for number, statement in enumerate(statements, start=1):
        progress.step = statement.step
        m.reporter.progress("swap", number - 1, len(statements), statement.step)
        building = statement.step.builds_index
        if statement.step.copies:
            await _copy(m, statement, exports, progress)
            continue
        async with index_progress(m, statement.sql if building else None):
            await execute(m, statement)
        await check_the_target_made(m, statement, surface)
        if statement.step is StatementKind.LOCK:
            progress.locked_at = time.perf_counter()
            before = await _checksums_under_the_lock(conn, inventory, mode, early or {}, progress)
    tables = await _checksums_after(conn, inventory, mode, before, progress)
    if expected is not None and catalog is not None:
        await catalog_after(conn, catalog, expected, progress)
    return tables


async def _checksums_under_the_lock(
    conn: asyncpg.Connection,
    inventory: SourceInventory,
    mode: ChecksumMode,
    early: Mapping[tuple[str, str], EarlyChecksum],
    progress: Progress,
) -> dict[tuple[str, str], Any]:
    """Every table's "before" checksum: the one read early where the lock finds the same row versions."""
    progress.step = TransactionStep.CHECKSUM_BEFORE
    before: dict[tuple[str, str], Any] = {}
    for schema, table in inventory.tables():
        names = {c.column for c in inventory.columns_of(schema, table)}
        read_early = early.get((schema, table))
        if read_early is not None and await still_current(conn, schema, table, read_early):
            before[(schema, table)] = read_early.content
            progress.checksums_read_early += 1
        else:
            before[(schema, table)] = await table_checksum(conn, schema, table, names, mode)
    return before


async def _checksums_after(
    conn: asyncpg.Connection,
    inventory: SourceInventory,
    mode: ChecksumMode,
    before: Mapping[tuple[str, str], Any],
    progress: Progress,
) -> list[TableVerification]:
    """Every table's checksum after the conversion against its "before": DataMismatch on any difference."""
    progress.step = TransactionStep.CHECKSUM_AFTER
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


async def _checksums_before_the_lock(
    m: Migration, statements: Sequence[Statement], inventory: SourceInventory, mode: ChecksumMode, progress: Progress
) -> dict[tuple[str, str], EarlyChecksum] | None:
    """Every table's "before" checksum, read before the lock, when the transaction builds no index.

    With an index build inside the window, the window is mostly that build and the early read
    would lengthen the migration for little. None after a checksum read early was not the
    content's (facts.checksums_under_lock): both are then read under the lock.
    """
    if m.facts.checksums_under_lock or any(s.step.builds_index for s in statements):
        return None
    progress.step, started = TransactionStep.CHECKSUM_BEFORE_LOCK, time.perf_counter()
    early = {}
    async with m.session.transaction(readonly=True):  # each statement its own snapshot, bounded as the swap is
        await set_timeouts(m.session, m.spec.lock_timeout, m.spec.statement_timeout)
        for schema, table in inventory.tables():
            names = {c.column for c in inventory.columns_of(schema, table)}
            early[(schema, table)] = await early_checksum(m.session, schema, table, names, mode)
    record_timing(m.status, Timing.CHECKSUM_BEFORE_LOCK, time.perf_counter() - started)
    return early


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
    done = continuation.already_done(m, await records.read(conn, m.name))
    if done is not None:
        return done
    ready = ready_to_change(m, "the swap")
    if not isinstance(ready, Ready):
        return ready
    plan, inventory, surface = ready.plan.conversion, ready.inventory, ready.surface
    facts = m.facts
    progress = Progress()
    try:
        early = await _checksums_before_the_lock(m, plan.swap, inventory, facts.checksum_mode, progress)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        return transaction_failure(error, progress, m.spec, "swap")
    transaction = await begin_bounded_transaction(m)
    try:
        progress.step = TransactionStep.RE_PLAN
        await check_plan_unchanged(m, ready)
        expected = expected_of(
            plan, inventory, target_extension=surface.extension, target_schema=m.target_schema(inventory)
        )
        with _export_area(m, plan.swap) as exports:
            tables = await convert(
                m, list(plan.swap), inventory, surface, facts.checksum_mode, progress, exports, early, expected
            )
        record_checksums(m.status, m.spec.verify.k, tables, facts.checksum_mode)
        record_catalog(m, progress.catalog)
        record_timing(m.status, Timing.WRITE_BLOCKED, progress.blocked_seconds)
        record_timing(m.status, Timing.CATALOG_READ_BEFORE, progress.catalog_before_seconds)
        record_timing(m.status, Timing.CATALOG_CHECK, progress.catalog_seconds)
        progress.step = TransactionStep.JOURNAL
        facts.rebuilds = [records.IndexBuild.of(r) for r in plan.rebuilds] + [
            records.IndexBuild.carried(build) for build in plan.carried_concurrent
        ]
        facts.tables = inventory.tables()
        facts.swap_loaded = True
        await records.write(conn, m.name, records.SWAPPED, ready.plan.plan_hash, continuation.swap_record(m))
        progress.step = TransactionStep.COMMIT
        await transaction.commit()
    except PlanDrift as error:
        await roll_back(transaction)
        return replan_after_drift(m, error)
    except DataMismatch as error:
        await roll_back(transaction)
        return after_mismatch(m, error, progress)
    except CatalogLoss as error:
        await roll_back(transaction)
        return await catalog_lost(m, error, "swap")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await roll_back(transaction)
        return transaction_failure(error, progress, m.spec, "swap")
    m.reporter.task_done("swap")
    return _swapped(m, ready, progress)


def _export_area(m: Migration, swap: Sequence[Statement]) -> AbstractContextManager[Path | None]:
    """A private directory for the files of the plan's COPY steps (Rebuild's), removed whatever happens; else none."""
    if any(statement.step.copies for statement in swap):
        return table_copy.export_area(m.scratch, m.name)
    return contextlib.nullcontext()


# The status names this many of a failed comparison's differences (the message counts them all).
SHOWN_IN_STATUS = 100


def record_catalog(m: Migration, comparison: Comparison | None) -> None:
    """The status's record of a catalog comparison: the counts, and the first differences by name."""
    if comparison is None:
        return
    verification = m.status.verification or Verification(k=m.spec.verify.k)
    verification.catalog = CatalogCheck(
        equal=comparison.equal,
        changed_as_planned=comparison.planned,
        differences=[str(d) for d in comparison.differences[:SHOWN_IN_STATUS]],
    )
    record_verification(m.status, verification)


async def catalog_lost(m: Migration, error: CatalogLoss, what: str, conn: asyncpg.Connection | None = None) -> Outcome:
    """After the catalog differed from what the plan makes (and the transaction rolled back): Fail, naming it.

    Unless another session changed the catalog while the transaction began: then the plan is made
    again (twice at most), as after any change under it. ``conn`` reads the catalog (the session's).
    """
    raced = await changed_by_others(conn or m.session, error)
    if raced is not None:
        return replan_after_drift(m, PlanDrift(f"the catalog changed while the {what} began ({raced.differences[0]})"))
    record_catalog(m, error.comparison)
    return Fail(Reason.CATALOG_MISMATCH, f"{error}; the {what} rolled back, nothing changed")


def after_mismatch(m: Migration, error: DataMismatch, progress: Progress) -> Outcome:
    """After checksums differed (and the swap rolled back): once more with parsed values under the lock, else Fail."""
    facts = m.facts
    if facts.checksum_mode.cheap or progress.checksums_read_early:
        # The target sent or printed some value differently from the sample, or the checksum
        # read before the lock was not the content's: compare parsed values, both under the lock.
        early_read = " (read before the lock)" if progress.checksums_read_early else ""
        was = f"{facts.checksum_mode} checksums{early_read}"
        facts.checksum_mode, facts.checksums_under_lock = ChecksumMode.NORMALIZED, True
        return Advance(Phase.SWAP, f"{was} differ ({error}); retrying with value checksums under the lock")
    return Fail(Reason.DATA_MISMATCH, f"content changed during conversion ({error}); the swap rolled back")


def _swapped(m: Migration, ready: Ready, progress: Progress) -> Outcome:
    """The committed swap's condition and the outcome that moves on to the reindex."""
    plan, tables = ready.plan.conversion, len(ready.inventory.tables())
    read_early = progress.checksums_read_early
    message = (
        f"{ready.inventory.source.name} → {ready.surface.extension} ({plan.route} route); "
        f"writes blocked {m.status.timings['writeBlockedSeconds']:.2f}s; checksums equal"
        + (f" ({read_early} of {tables} read before the lock, the same rows under it)" if read_early else "")
        + (f"; {progress.catalog.summary}" if progress.catalog else "")
        + (f"; {progress.exported_bytes} bytes exported and imported ({m.facts.copy_format} COPY)"
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
