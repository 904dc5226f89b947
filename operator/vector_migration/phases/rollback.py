"""Rollback: undo a committed swap in SQL, else offer the backup."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import asyncpg

from ..api import (
    IndexInventory,
    TableVerification,
    VectorMigrationSpec,
    VectorMigrationStatus,
)
from ..database.catalog import (
    SourceInventory,
    read_extension,
    read_server,
)
from ..database.catalog_compare import Expected
from ..database.inventory import read_inventory
from ..database.sql import qualify
from ..database.surface import TargetSurface
from ..engine import records
from ..engine.batching import part_of
from ..engine.context import Migration, RunInputs
from ..engine.conversion import build_plan
from ..engine.invariant import CatalogLoss, expected_of
from ..engine.outcomes import Advance, Fail, Outcome
from ..engine.plan import ColumnKey, PlanningError, Statement, attach_indexes, column_key, index_comment
from ..engine.records import SourceRecord, SwapRecord
from ..engine.transactions import (
    DataMismatch,
    PlanDrift,
    Progress,
    begin_bounded_transaction,
    roll_back,
    transaction_failure,
)
from ..status import record_timing, set_condition
from ..vocabulary import (
    ChecksumMode,
    ConditionType,
    Phase,
    Reason,
    ReindexMode,
    StatementKind,
    Strategy,
    Timing,
    TransactionStep,
    UnmappableIndexes,
)
from .probe import ProbeFailed, probe_surface
from .restore import ask_for_restore, restore_backup, restore_token
from .swap import convert, record_catalog


class ReversePlan(NamedTuple):
    """One transaction of a rollback: its run, inventory, surface, statements and catalog; whether it is the last."""

    backwards: Migration
    inventory: SourceInventory
    surface: TargetSurface
    statements: list[Statement]
    expected: Expected
    finishes: bool


async def run_rollback(m: Migration) -> Outcome:
    """Undo a committed swap: in SQL when possible, else (with a person's consent) from the backup.

    The SQL way runs the same proven conversion from the target back to the source. When that
    cannot be done, the verified backup can be restored, replacing every object in the archive
    with its content at backup time: that loses the writes made since, so it waits for a person
    to consent to that exact archive (its restore token).
    """
    conn = m.session
    recorded = await records.read(conn, m.name)
    # The swap's record, else that of InPlace's batches when some committed and the last did not.
    event = records.SWAPPED if records.SWAPPED in recorded else records.IN_PLACE_BATCHES
    swapped = recorded.get(event, SwapRecord)
    if swapped is None:
        return Fail(Reason.NOTHING_TO_ROLL_BACK, "nothing to roll back: no committed swap is recorded")
    plan_hash = recorded.plan_hash(event)
    saved = swapped.status
    backup = saved.backup if saved.backup and saved.backup.verified else m.status.backup
    if backup is not None and backup.verified and m.decisions.restore_consent == restore_token(backup):
        return await restore_backup(m, swapped, plan_hash, backup)
    outcome = await _reverse_in_sql(m, swapped, plan_hash)
    if isinstance(outcome, Fail) and outcome.reason is Reason.ROLLBACK_FAILED:
        return ask_for_restore(m, backup, outcome.message)
    return outcome


async def _reverse_plan(m: Migration, swapped: SwapRecord) -> ReversePlan | Fail:
    """The run, inventory, surface and statements that convert the target back to the source."""
    conn = m.session
    original, saved = swapped.source, swapped.status
    target = await read_extension(conn, m.spec.target.extension)
    if target is None or original is None:
        return Fail(Reason.ROLLBACK_FAILED, f"cannot roll back in SQL: extension {m.spec.target.extension} is gone")
    reverse = _reverse_spec(m.spec, target.name, original)
    backwards = Migration(RunInputs(m.name, reverse, m.params, reporter=m.reporter), conn=conn)
    server = await read_server(conn)
    inventory = await read_inventory(conn, reverse, server, target, count_rows=False)
    if inventory.blockers:
        return Fail(Reason.ROLLBACK_FAILED, "cannot roll back: " + "; ".join(b.message for b in inventory.blockers))
    inventory.callable_functions = frozenset()  # back to what the application called before: nothing to warn of
    backwards.facts.column_types = _types_before(saved, inventory)
    # The source is still installed when only some of InPlace's batches committed, or some went back.
    partly = await read_extension(conn, original.extension) is not None
    # InPlace's batches go back a batch at a time too, and the target is dropped alone after them.
    size = m.spec.in_place.tables_per_batch  # set with InPlace only (the spec's rule)
    chosen = inventory.tables()[:size] if size is not None else inventory.tables()
    finishes = size is None or not chosen
    part = part_of(inventory, chosen, last=finishes) if size is not None else inventory
    try:
        surface = await probe_surface(backwards, inventory, original.source_schema, server.can_create_database)
        plan = build_plan(
            part,
            surface,
            reverse,
            target_schema=original.source_schema,
            target_installed=partly,
            column_types=backwards.facts.column_types,
        )
    except (ProbeFailed, PlanningError) as error:
        return Fail(Reason.ROLLBACK_FAILED, f"cannot roll back: {error}")
    expected = expected_of(
        plan, part, target_extension=surface.extension, target_schema=original.source_schema, drops_source=finishes
    )
    if size is not None:  # the type goes back column by column: the other batches' columns keep theirs
        expected = dataclasses.replace(expected, types={})
    statements = [
        s
        for s in plan.swap
        if not s.step.completes_index and (finishes or s.step is not StatementKind.DROP_SOURCE_EXTENSION)
    ]
    saved_indexes = saved.inventory.indexes if saved.inventory else []
    if partly or size is not None:  # only the indexes of the tables this transaction converts back
        converted = {f"{schema}.{table}" for schema, table in part.relations()}
        saved_indexes = [i for i in saved_indexes if i.table in converted]
    restored, expected = _restored_indexes(saved_indexes, part, expected)
    return ReversePlan(backwards, part, surface, statements + restored, expected, finishes)


def _reverse_spec(spec: VectorMigrationSpec, target: str, original: SourceRecord) -> VectorMigrationSpec:
    """The spec of the conversion back: from the target to the source as it was, in place."""
    reverse = spec.model_copy(deep=True)
    reverse.source.extension, reverse.target.extension = target, original.extension
    reverse.target.version, reverse.target.target_schema = original.version, original.source_schema
    reverse.tables, reverse.reindex.mode = [], ReindexMode.ATOMIC
    reverse.rebuild.column_types = []  # the types to go back to come from the saved inventory
    reverse.strategy = Strategy.IN_PLACE  # converting back in place needs no scratch space, whatever went forward
    # The carried indexes are created again from their saved definitions, so the target's copies
    # are only dropped, whether or not the source could take them back.
    reverse.indexes.unmappable = UnmappableIndexes.DROP
    return reverse


def _types_before(saved: VectorMigrationStatus, inventory: SourceInventory) -> dict[ColumnKey, str]:
    """Each column's type before the migration, from the saved inventory.

    Every column goes back to exactly the type it had: a halfvec column given a 32-bit type by
    rebuild.columnTypes becomes halfvec again, not the 32-bit type's own counterpart.
    """
    saved_types = {
        (saved_table.name, column.name): column.type
        for saved_table in (saved.inventory.tables if saved.inventory else [])
        for column in saved_table.columns
    }
    return {
        column_key(c): saved_types[(f"{c.schema}.{c.table}", c.column)]
        for c in inventory.columns
        if (f"{c.schema}.{c.table}", c.column) in saved_types
    }


def _restored_indexes(
    saved: list[IndexInventory], inventory: SourceInventory, expected: Expected
) -> tuple[list[Statement], Expected]:
    """Each index saved before the migration made again, with the comment the target's carried; what the catalog shows.

    Each comes back as it was before the migration, whatever the target's is now (or if it is gone).
    """
    comments = {(i.schema, i.name): i.comment for i in inventory.indexes}
    comments.update({(i.schema, i.name): i.comment for i in inventory.carried_indexes})
    statements, restored = [], []
    for index in saved:
        schema = index.table.split(".", 1)[0]
        statements.append(Statement(StatementKind.RESTORE_INDEX, index.definition))
        statements += index_comment(schema, index.name, comments.get((schema, index.name)))
        restored.append(f"index {qualify(schema, index.name)}")
    # In a partitioned table's tree each comes back attached where the target's of its name is.
    names = {(index.table.split(".", 1)[0], index.name) for index in saved}
    statements += attach_indexes(i for i in inventory.indexes if (i.schema, i.name) in names)
    return statements, dataclasses.replace(
        expected,
        changes={**expected.changes, **{key: RESTORED_INDEX_CHANGES for key in restored}},
        added={**expected.added, **{key: "restored from its saved definition" for key in restored}},
    )


# What a saved definition gives back of an index the migration rebuilt or rewrote; its place in a
# partitioned index, its table and the rest are kept, and compared.
RESTORED_INDEX_CHANGES = frozenset({"method", "operator classes", "keys", "options", "predicate"})


async def _reverse_in_sql(m: Migration, swapped: SwapRecord, plan_hash: str) -> Outcome:
    """The conversion from the target back to the source, with the indexes saved before the migration.

    The reverse plan is derived exactly as the forward one (the target's objects are read, the
    source's surface is probed, columns and views are mapped back), except that the indexes are
    recreated from the definitions saved before the migration, not mapped from the target's.
    The journal's "swapped" record is removed in the last transaction, so a later run of the
    migration starts from the beginning. InPlace's batches go back a batch to a transaction, each
    planned from the database as it is then: a rollback cut off halfway continues where it was.
    """
    original, saved = swapped.source, swapped.status
    tables: list[TableVerification] = []
    restored = 0
    while True:
        reverse = await _reverse_plan(m, swapped)
        if isinstance(reverse, Fail):
            return reverse
        done = await _reverse_transaction(m, reverse, plan_hash, tables)
        if not isinstance(done, tuple):
            return done
        converted, mode = done
        tables += converted
        restored += sum(1 for statement in reverse.statements if statement.step is StatementKind.RESTORE_INDEX)
        if reverse.finishes:
            break
        m.reporter.progress("rollback", len(tables), None, f"{len(tables)} table(s) converted back")
    assert original is not None  # noqa: S101 - _reverse_plan refuses a record without it
    m.reporter.task_done("swap")
    unchanged = _equal_to_before_migration(saved, tables, mode)
    message = (
        f"restored {original.extension} {original.version}: {len(tables)} table(s) converted back with "
        f"checksums equal, {restored} original index(es) recreated"
        + ("; every table equals its pre-migration checksum" if unchanged else "")
    )
    set_condition(m.status, ConditionType.ROLLED_BACK, True, Reason.COMPLETED, message, m.generation)
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.ROLLED_BACK, message, m.generation)
    return Advance(Phase.ROLLED_BACK, message)


async def _reverse_transaction(
    m: Migration, reverse: ReversePlan, plan_hash: str, before: list[TableVerification]
) -> tuple[list[TableVerification], ChecksumMode] | Outcome:
    """One transaction of the rollback, with the tables it converted back and the checksum mode that proved them.

    The cheapest checksum the samples allow, and parsed values if it differs: a target may print or
    send a value other than its samples showed (the real RuVector prints some floats as pgvector
    does not), which is a difference of form, never of content; the swap retries the same way.
    """
    conn = m.session
    modes = [reverse.backwards.facts.checksum_mode]
    if modes[0].cheap:
        modes.append(ChecksumMode.NORMALIZED)
    for mode in modes:
        progress = Progress()
        transaction = await begin_bounded_transaction(m)
        try:
            tables = await convert(
                reverse.backwards, reverse.statements, reverse.inventory, reverse.surface, mode, progress,
                expected=reverse.expected,
            )  # fmt: skip
            if reverse.finishes:
                progress.step = TransactionStep.JOURNAL
                record = records.RollbackRecord(tables=[*before, *tables])
                await records.forget_all_but_rollback(conn, m.name, plan_hash, record)
            progress.step = TransactionStep.COMMIT
            await transaction.commit()
            blocked = max(progress.blocked_seconds, m.status.timings.get(Timing.ROLLBACK_WRITE_BLOCKED.value, 0.0))
            record_timing(m.status, Timing.ROLLBACK_WRITE_BLOCKED, blocked if before else progress.blocked_seconds)
            return tables, mode
        except DataMismatch as error:
            await roll_back(transaction)
            if mode is not modes[-1]:
                continue
            return Fail(Reason.ROLLBACK_FAILED, f"rollback would change content ({error}); it rolled back itself")
        except CatalogLoss as error:
            await roll_back(transaction)
            record_catalog(m, error.comparison)
            return Fail(
                Reason.ROLLBACK_FAILED, f"rollback would not give the catalog back ({error}); it rolled back itself"
            )
        except (PlanDrift, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            await roll_back(transaction)
            return transaction_failure(error, progress, m.spec, "rollback")
    raise AssertionError("unreachable: the last mode returns")  # pragma: no cover


def _equal_to_before_migration(
    saved: VectorMigrationStatus, tables: list[TableVerification], mode: ChecksumMode
) -> bool:
    """Whether the rolled-back tables hold exactly what they held before the migration."""
    if saved.verification is None or saved.verification.checksum_mode != mode:
        return False
    before = {t.name: (t.rows_before, t.checksum_before) for t in saved.verification.tables}
    return all(before.get(t.name) == (t.rows_after, t.checksum_after) for t in tables)
