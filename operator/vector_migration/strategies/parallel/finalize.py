"""Finalize: every shadow takes its table's name in one short transaction; the old tables are kept in sync.

The transaction runs the plan's finalize stage: lock the tables and their shadows, rename, move the
sequences, install the reverse sync trigger. Its lock window does not depend on the tables' size:
it renames, it does not copy. After ``parallel.keepOldFor`` the old tables go (the plan's last stage).
"""

from __future__ import annotations

import time
from datetime import timedelta

import asyncpg

from ...api import ParallelStatus, VectorMigrationStatus, duration_ms
from ...database.catalog import read_extension
from ...database.catalog_compare import SOURCE_NAMES, Expected
from ...database.catalog_state import CatalogState
from ...database.sql import qualify, quote_ident
from ...engine import records
from ...engine.context import Migration
from ...engine.invariant import CatalogLoss, catalog_after, catalog_before
from ...engine.outcomes import Advance, Outcome
from ...engine.plan import Statement
from ...engine.transactions import Progress, begin_bounded_transaction, execute, roll_back, transaction_failure
from ...phases.restore import drop_unused_extension
from ...phases.swap import catalog_lost, record_catalog
from ...phases.verify import fail_verification, hold_for_a_decision, record_success
from ...status import now, record_parallel, record_timing, seconds_since, set_condition
from ...vocabulary import ConditionType, Phase, Reason, StatementKind, Timing, TransactionStep
from .dependents import validate_keys
from .plan import after_renames, drop_old_statements, finalize_transaction
from .recorded import FinalizeRecord, OldTablesDropped, ShadowTable, shadows_recorded
from .shadow import START_OVER, recorded_shadows
from .verify import analyse


async def run_finalize(m: Migration) -> Outcome:
    """Swap every shadow in under its table's name in one short transaction; keep the old tables in sync."""
    recorded, tables = await recorded_shadows(m)
    if tables is None:
        return START_OVER
    if records.FINALIZED not in recorded:
        failed = await _finalize(m, recorded, tables)
        if failed is not None:
            return failed
    # Idempotent: a key already valid is not scanned again, so a run cut off here simply repeats it.
    for statement in validate_keys(tables):
        await execute(m, statement)
    judgement = await analyse(m, tables, "final")
    problems = judgement.problems
    if problems:
        return fail_verification(m, problems, "after the finalize: ")
    if judgement.held:
        return hold_for_a_decision(m, judgement.held, "the tables are migrated and equal to the old ones, kept in sync")
    parallel = m.status.parallel or ParallelStatus()
    message = (
        f"{len(tables)} table(s) now on {m.spec.target.extension}; writes waited {parallel.lock_window_seconds}s "
        f"for the swap; the old tables are kept in sync until {parallel.drop_old_after}"
    )
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, True, Reason.COMPLETED, message, m.generation)
    set_condition(m.status, ConditionType.VERIFIED, True, Reason.PASSED, message, m.generation)
    if seconds_until_old_tables_go(m.status) == 0:
        message += "; " + await drop_old_tables(m)
    await record_success(m, message)
    return Advance(Phase.SUCCEEDED, message)


async def _finalize(m: Migration, recorded: records.Journal, tables: list[ShadowTable]) -> Outcome | None:
    """The finalize's one transaction, proven by the catalog before it commits; the outcome when it failed."""
    conn = m.session
    progress = Progress()
    transaction = await begin_bounded_transaction(m)
    try:
        catalog = await catalog_before(conn, progress)
        for statement in finalize_transaction(tables, _after_renames(recorded)):
            progress.step = statement.step
            await execute(m, statement)
            if statement.step is StatementKind.LOCK:
                progress.locked_at = time.perf_counter()
        expected = shadows_expected(
            catalog, tables, _staying(recorded), _remade_views(recorded), _carried_functions(recorded)
        )
        await catalog_after(conn, catalog, expected, progress)
        keep = timedelta(milliseconds=duration_ms(m.spec.parallel.keep_old_for))
        parallel = m.status.parallel or ParallelStatus()
        parallel.old_tables = [f"{t.table_schema}.{t.old}" for t in tables]
        parallel.drop_old_after = now(later_by=keep)
        parallel.lock_window_seconds = round(progress.blocked_seconds, 4)
        record_parallel(m.status, parallel)
        finalized = FinalizeRecord(
            drop_old_after=parallel.drop_old_after, lock_window_seconds=parallel.lock_window_seconds
        )
        await records.write(conn, m.name, records.FINALIZED, m.status.plan_hash or "", finalized)
        progress.step = TransactionStep.COMMIT
        await transaction.commit()
        parallel.lock_window_seconds = round(progress.blocked_seconds, 4)
    except CatalogLoss as error:
        await roll_back(transaction)
        return await catalog_lost(m, error, "finalize")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await roll_back(transaction)
        return transaction_failure(error, progress, m.spec, "finalize")
    record_timing(m.status, Timing.WRITE_BLOCKED, parallel.lock_window_seconds or 0.0)
    record_timing(m.status, Timing.CATALOG_READ_BEFORE, progress.catalog_before_seconds)
    record_timing(m.status, Timing.CATALOG_CHECK, progress.catalog_seconds)
    record_catalog(m, progress.catalog)
    return None


def shadows_expected(
    before: CatalogState,
    tables: list[ShadowTable],
    staying: frozenset[str] = frozenset(),
    remade: frozenset[str] = frozenset(),
    carried: frozenset[str] = frozenset(),
) -> Expected:
    """What the finalize changes, read off the shadows the approved plan made: each takes its table's place.

    A migrated column becomes what its shadow's column is (the type the plan converted to), a vector
    index what the shadow's index is (the target's method and classes), and the types they had become
    the shadow's everywhere else (a carried function's arguments). Everything else of the table (its
    grants, sequences, comments, publications, rules, triggers, options) must be as it was. The
    shadows and the old tables kept aside are the migration's own. A materialized view in
    ``staying`` (qualified) reads the old table until keepOldFor: its query names that table now,
    and its columns keep their types. A view in ``remade`` is made again over the migrated table by
    the plan, from its query rewritten for the target where it named the source's types. A function
    in ``carried`` ("function schema.name") is made again for the target: only the names in its
    signature and body may change.
    """
    types: dict[str, str] = {}
    column_types: dict[str, str] = {}
    changes: dict[str, frozenset[str]] = {}
    removed: dict[str, str] = {}
    for table in tables:
        original, shadow = qualify(table.table_schema, table.table), qualify(table.table_schema, table.shadow)
        for column in table.vector_columns:
            was = before.objects.get(f"column {original}.{quote_ident(column)}")
            becomes = before.objects.get(f"column {shadow}.{quote_ident(column)}")
            if was is None or becomes is None:
                continue
            column_types[f"column {original}.{quote_ident(column)}"] = becomes.attributes["type"]
            types.setdefault(was.attributes["type"], becomes.attributes["type"])
        for index in table.vector_indexes:
            changes[f"index {qualify(table.table_schema, index.original)}"] = frozenset(
                {"method", "operator classes", "options", "predicate"}
            )
        rewrites, schema = table.rewrites, table.table_schema
        for column in rewrites.defaults:
            changes[f"column {original}.{quote_ident(column)}"] = frozenset({"default"})
        for name in rewrites.checks:
            changes[f"constraint {original}.{quote_ident(name)}"] = frozenset({"definition"})
        for name in rewrites.indexes:
            changes[f"index {qualify(schema, name)}"] = frozenset({"method", "operator classes", "keys", "predicate"})
        removed.update({f"index {qualify(schema, name)}": "dropped by request (indexes.unmappable: Drop)"
                        for name in rewrites.dropped})  # fmt: skip
        for key in table.referencing_keys:
            # re-pointed NOT VALID under the lock, validated right after it commits (validate_keys)
            changes[f"constraint {qualify(key.table_schema, key.table)}.{quote_ident(key.name)}"] = frozenset(
                {"definition", "validated"}
            )
    for function in carried:
        changes[function] = frozenset({"arguments", SOURCE_NAMES})
    for found in before.objects.values():
        if found.kind == "column" and found.table in staying:
            column_types[found.key] = found.attributes["type"]
    for view in staying | remade:
        changes[f"relation {view}"] = frozenset({"definition"})
    own = {qualify(t.table_schema, name) for t in tables for name in (t.shadow, t.old)}
    return Expected(types=types, column_types=column_types, changes=changes, removed=removed, own=frozenset(own))


_DROP_MATERIALIZED = "DROP MATERIALIZED VIEW "


def _staying(recorded: records.Journal) -> frozenset[str]:
    """The materialized views that stay with the old tables until keepOldFor: the plan's later move drops them."""
    prepared = shadows_recorded(recorded)
    moves = prepared.materialized_moves if prepared is not None else []
    return frozenset(
        move.sql.removeprefix(_DROP_MATERIALIZED).removesuffix(" RESTRICT")
        for move in moves
        if move.sql.startswith(_DROP_MATERIALIZED)
    )


def _carried_functions(recorded: records.Journal) -> frozenset[str]:
    """The functions the plan drops and makes again for the target, as the catalog reading names them."""
    prepared = shadows_recorded(recorded)
    statements = prepared.functions if prepared is not None else []
    return frozenset(f"function {name}" for name in _named_by(statements, ("DROP FUNCTION ", "DROP PROCEDURE ")))


def _remade_views(recorded: records.Journal) -> frozenset[str]:
    """The views the plan makes again at the finalize (their CREATE statements), qualified as the catalog names them."""
    prepared = shadows_recorded(recorded)
    creates = prepared.view_creates if prepared is not None else []
    return frozenset(_named_by(creates, ("CREATE VIEW ", "CREATE MATERIALIZED VIEW ")))


def _named_by(statements: list[records.RecordedStatement], prefixes: tuple[str, ...]) -> set[str]:
    """The objects the journal's statements that start with one of ``prefixes`` name first."""
    return {
        _qualified_name_at(s.sql, len(prefix)) for s in statements for prefix in prefixes if s.sql.startswith(prefix)
    }


def _qualified_name_at(sql: str, start: int) -> str:
    """The quoted "schema"."name" the engine wrote at ``start`` of its own statement (quote_ident quotes always)."""
    end, parts = start, 0
    while parts < 2:
        end = sql.index('"', end + 1)  # the closing quote, skipping doubled ones
        while sql.startswith('""', end):
            end = sql.index('"', end + 2)
        parts += 1
        end += 1 if parts == 2 else 2  # past the closing quote, and past the dot between the parts
    return sql[start:end]


def _after_renames(recorded: records.Journal) -> list[Statement]:
    """The views and functions the journal recorded with the shadows, as the finalize runs them."""
    prepared = shadows_recorded(recorded)
    if prepared is None:
        return []
    steps = after_renames(prepared.view_drops, prepared.functions, prepared.view_creates, prepared.functions_validated)
    return [step.statement for step in steps]


def seconds_until_old_tables_go(status: VectorMigrationStatus) -> float | None:
    """For a succeeded Parallel migration still keeping its old tables: seconds until they may go."""
    parallel = status.parallel
    if parallel is None or parallel.old_tables_dropped or parallel.drop_old_after is None:
        return None
    return max(0.0, -seconds_since(parallel.drop_old_after))


async def drop_old_tables(m: Migration) -> str:
    """After keepOldFor: the plan's last stage in one transaction, then the source extension.

    Materialized views moved, reverse triggers and old tables (RESTRICT) dropped: a run cut off
    here repeats it whole.
    """
    conn = m.session
    recorded = await records.read(conn, m.name)
    prepared = shadows_recorded(recorded)
    if prepared is None or records.OLD_DROPPED in recorded:
        return "the old tables are already gone"
    tables = prepared.shadows
    moves = [move.statement for move in prepared.materialized_moves]
    async with conn.transaction():
        for statement in moves:
            await execute(m, statement)
        for table in tables:
            for statement in drop_old_statements(table):
                await execute(m, statement)
        await records.write(conn, m.name, records.OLD_DROPPED, m.status.plan_hash or "", OldTablesDropped())
    parallel = m.status.parallel or ParallelStatus()
    parallel.old_tables_dropped = True
    record_parallel(m.status, parallel)
    source = m.spec.source.extension
    left = await drop_unused_extension(m, source)
    if await read_extension(conn, source) is None:
        set_condition(
            m.status, ConditionType.EXTENSION_SWAPPED, True, Reason.COMPLETED, f"{source} dropped", m.generation
        )
    return f"old tables dropped{left}"
