"""Prepare: the new database, the source's schema in it converted to the target, and a subscription copying the rows.

Nothing here touches the application's tables: the source gains only a publication and a slot.
The new database has no application, so nothing forces one transaction there: its schema is
restored an object at a time and converted a statement at a time, and so a database of thousands
of tables fits a lock table on default settings (issue "Scale"). Its catalog is compared with the
source's whole, before the conversion and after it. An attempt cut off in this process (pg_restore
here, or the conversion) is taken apart and made again by the next run (tear_down_replica); a
schema Job is waited for; once the journal records the new database, the next run continues with
the copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import asyncpg

from ...api import ReplicatedTable, ReplicateStatus
from ...database.backup import BackupError, BackupPending, SchemaCopyRequest
from ...database.catalog_compare import Expected, compare
from ...database.catalog_state import CatalogState, read_catalog
from ...database.sql import quote_ident
from ...engine import continuation, records
from ...engine.carry import sets_for_what_follows
from ...engine.context import Migration, as_admin
from ...engine.invariant import CatalogLoss, expected_of
from ...engine.outcomes import Advance, Fail, Outcome, Wait
from ...engine.plan import Statement
from ...engine.records import IndexBuild, Journal, RecordedStatement, TableName
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
from ...phases.swap import check_plan_unchanged, record_catalog, replan_after_drift
from ...status import record_replicate, set_condition
from ...vocabulary import ConditionType, Phase, Reason, StatementKind
from .names import ReplicaNames
from .plan import ReplicatePlan, conninfo, publication, slot, subscription
from .recorded import ReplicaRecord, replica_recorded
from .sessions import login, maintenance, names_of, on_new_database, target_login
from .teardown import database_exists, subscribed, tear_down_replica

# A phase after the new database was made, run where the journal records none: plan again from the start.
START_OVER = Advance(Phase.CHECKLIST, "no new database is recorded; starting from the checklist")


async def recorded_replica(m: Migration) -> tuple[Journal, ReplicaRecord | None]:
    """The journal, and the new database's record (None before it exists), with the run's facts loaded."""
    recorded = await records.read(m.session, m.name)
    replica = replica_recorded(recorded)
    if replica is not None and not m.facts.swap_loaded:
        continuation.load_swap_record(m, replica, recorded.plan_hash(records.REPLICA_PREPARED))
        record_replicate(m.status, m.status.replicate or replica.status.replicate)
    return recorded, replica


@dataclass(frozen=True)
class Recorded:
    """A phase after the new database was made: the journal, its record of the new database, the names."""

    journal: Journal
    replica: ReplicaRecord
    names: ReplicaNames


async def recorded_or_start_over(m: Migration) -> Recorded | Outcome:
    """What the journal records of the new database, or (none recorded) back to the checklist."""
    journal, replica = await recorded_replica(m)
    if replica is None:
        return START_OVER
    return Recorded(journal, replica, await names_of(m, journal))


async def run_create_replica(m: Migration) -> Outcome:
    """Create the new database with the converted schema, publish every table, and subscribe it.

    Each step is skipped when its result is there, so a run that waited for the schema Job, or was
    cut off, continues where it was; an attempt under another plan is taken apart first.
    """
    recorded, replica = await recorded_replica(m)
    if replica is not None:
        return Advance(Phase.BACKFILL, "the new database already exists; continuing with its copy")
    ready = ready_to_change(m, "the new database")
    if not isinstance(ready, Ready):
        return ready
    plan = cast(ReplicatePlan, ready.plan)
    try:
        await check_plan_unchanged(m, ready)
    except PlanDrift as error:
        return replan_after_drift(m, error)
    names = plan.names
    if records.REPLICA_PREPARING not in recorded or recorded.plan_hash(records.REPLICA_PREPARING) != plan.plan_hash:
        await tear_down_replica(m, names, m.name, None)  # an attempt under another plan, recognised by its marker
        # Recorded first: the journal is replicated with the tables, so it must be in the schema copied.
        await records.write(m.session, m.name, records.REPLICA_PREPARING, plan.plan_hash, records.Record())
    elif m.backup.runs_here:
        # This process's own attempt was cut off (its pg_restore, or its conversion, half done): again.
        await tear_down_replica(m, names, m.name, None)
    m.reporter.progress("new database", note=f"creating {names.target}")
    try:
        await _create_database(m, plan)
        await _copy_schema(m, plan, ready)
        converted = await _convert_schema(m, plan, ready)
    except BackupPending as pending:
        return Wait(Reason.IN_PROGRESS, str(pending), delay=5.0)
    except BackupError as error:
        await tear_down_replica(m, names, m.name, None)
        return Fail(Reason.SWAP_FAILED, f"copying the schema into {names.target} failed: {error}; nothing was changed")
    if converted is not None:
        await tear_down_replica(m, names, m.name, None)
        return converted
    await _subscribe(m, plan)
    m.facts.rebuilds = [IndexBuild.of(r) for r in plan.conversion.rebuilds]
    m.facts.tables = ready.inventory.tables()
    m.facts.swap_loaded = True
    copying = [ReplicatedTable(name=f"{s}.{t}", state="copying") for s, t in plan.tables]
    databases = {"source_database": names.source, "target_database": names.target, "old_database": names.old}
    record_replicate(m.status, ReplicateStatus(**databases, endpoint=plan.endpoint, tables=copying))
    limit = await m.session.fetchval(
        "SELECT datconnlimit FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()"
    )
    record = _record(m, plan, limit)
    record.catalog = catalog_expected(m, plan, ready, built_later=False).as_document()
    await records.write(m.session, m.name, records.REPLICA_PREPARED, plan.plan_hash, record)
    message = (
        f"database {names.target} created with {ready.surface.extension} ({plan.conversion.route} route); "
        f"copying {len(plan.tables)} table(s) from {names.source} by logical replication"
    )
    set_condition(m.status, ConditionType.REPLICA_SYNCED, False, Reason.IN_PROGRESS, message, m.generation)
    m.reporter.task_done("new database")
    return Advance(Phase.BACKFILL, message)


async def _create_database(m: Migration, plan: ReplicatePlan) -> None:
    """CREATE DATABASE with the source's properties and this migration's marker, unless it is there."""
    async with maintenance(m, m.inputs.target_server) as admin:
        if await database_exists(admin, plan.names.target):
            return
        for statement in plan.database:
            await admin.execute(statement)


async def _copy_schema(m: Migration, plan: ReplicatePlan, ready: Ready) -> None:
    """pg_dump --schema-only | pg_restore, here or in a Job (which, already run, only says how it ended).

    Here, the new database is a fresh one (run_create_replica made it again); a Job's run is waited
    for, and whatever it left is compared whole with the source's schema before the conversion.
    """
    m.reporter.progress("new database", note="copying the schema (pg_dump --schema-only | pg_restore)")
    request = SchemaCopyRequest(
        migration=m.name,
        source_database=plan.names.source,
        target_database=plan.names.target,
        server_major=ready.inventory.server.version_num // 10000,
        plan_hash=plan.plan_hash,
    )
    await m.backup.copy_schema(login(m), request, target_login(m))


async def _convert_schema(m: Migration, plan: ReplicatePlan, ready: Ready) -> Outcome | None:
    """The InPlace conversion on the new database's empty tables, a statement at a time; a Fail when it cannot.

    Its catalog is the source's whole before (else Fail), and exactly what the plan makes of it
    after (else Fail): nobody else uses the new database, so a difference is the conversion's.
    Skipped when the catalog already is what the plan makes (a run cut off before its record).
    """
    names = plan.names
    expected = catalog_expected(m, plan, ready, built_later=True)
    async with on_new_database(m, names) as there:
        source, before = await read_catalog(m.session), await read_catalog(there.session)
        if _converted(source, before, expected):
            return None
        copied = compare(source, before, SEQUENCES_LATER)
        if copied.differences:
            return Fail(
                Reason.CATALOG_MISMATCH,
                f"the schema copied into {names.target} is not {names.source}'s: {CatalogLoss(copied)}; "
                "the application's database was not changed",
            )
        progress = Progress()
        try:
            await _statement_by_statement(there, plan.schema, ready, progress)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, PlanDrift) as error:
            return transaction_failure(error, progress, m.spec, "swap")
        converted = compare(before, await read_catalog(there.session), expected)
    if converted.differences:
        record_catalog(m, converted)
        return Fail(Reason.CATALOG_MISMATCH, f"conversion of {names.target}: {CatalogLoss(converted)}; "
                    "the application's database was not changed")  # fmt: skip
    return None


def _converted(source: CatalogState, reading: CatalogState, expected: Expected) -> bool:
    """Whether a reading is what the plan makes of the source: all it adds there, nothing it removes.

    The comparison alone cannot tell: where the target's names are pgvector's own (the v2 plan's)
    an unconverted copy compares equal too.
    """
    there = reading.objects.keys()
    return (
        not compare(source, reading, expected).differences
        and all(key in there for key in expected.added)
        and not any(key in there for key in expected.removed)
    )


async def _statement_by_statement(
    there: Migration, statements: Sequence[Statement], ready: Ready, progress: Progress
) -> None:
    """Each planned statement in a bounded transaction of its own, and the target checked once created.

    Except that a carried function's statements share one while a setting they need is on (its body
    unchecked at creation, its own search_path for its check). The LOCK is not taken: nobody else
    uses the new database, and it would hold every table at once.
    """
    transaction, setting_on = None, False
    try:
        for number, statement in enumerate(statements, start=1):
            if statement.step is StatementKind.LOCK:
                continue
            progress.step = statement.step
            there.reporter.progress("new database", number - 1, len(statements), statement.step)
            transaction = transaction or await begin_bounded_transaction(there)
            await execute(there, statement)
            await check_the_target_made(there, statement, ready.surface)
            setting_on = setting_on if (sets := sets_for_what_follows(statement)) is None else sets
            if not setting_on:
                await transaction.commit()
                transaction = None
        if transaction is not None:
            await transaction.commit()
    except BaseException:
        if transaction is not None:
            await roll_back(transaction)
        raise


def catalog_expected(m: Migration, plan: ReplicatePlan, ready: Ready, *, built_later: bool) -> Expected:
    """What the conversion changes of the source's catalog; the channels' publications are the migration's own.

    ``built_later``: as the conversion leaves the new database, before its indexes are built.
    """
    inventory = ready.inventory
    expected = expected_of(
        plan.conversion,
        inventory,
        target_extension=ready.surface.extension,
        target_schema=m.target_schema(inventory),
        built_later=built_later,
    )
    own = expected.owning(quote_ident(plan.names.forward), quote_ident(plan.names.back))
    return dataclasses.replace(own, settled_later=SEQUENCES_LATER.settled_later)


# The sequences' values reach the new database under the switchover's block, after every comparison.
SEQUENCES_LATER = Expected(settled_later=frozenset({"last value"}))


async def _subscribe(m: Migration, plan: ReplicatePlan) -> None:
    """Publication and slot on the source, then the subscription that copies and streams; each unless there."""
    names = plan.names
    async with as_admin(m):
        if not await m.session.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)", names.forward
        ):
            await m.session.execute(publication(names.forward, plan.tables))
        if not await m.session.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)", names.forward
        ):
            await m.session.execute(slot(names.forward))
    connection = conninfo(login(m), names.source, with_password=True)
    async with on_new_database(m, names) as there, as_admin(there):
        if not await subscribed(there.session, names.forward):
            await there.session.execute(subscription(names.forward, connection, copy_data=True))


def _record(m: Migration, plan: ReplicatePlan, connection_limit: int) -> ReplicaRecord:
    """The swap record's facts, and the names and tables of this replica."""
    names = plan.names
    rebuilt = {r.definition for r in plan.conversion.rebuilds}
    return ReplicaRecord(
        **continuation.swap_record(m).model_dump(by_alias=True),
        source_database=names.source,
        target_database=names.target,
        old_database=names.old,
        forward=names.forward,
        back=names.back,
        published=[TableName(table_schema=s, table=t) for s, t in plan.tables],
        endpoint=plan.endpoint,
        source_connection_limit=connection_limit,
        builds=[RecordedStatement.of(s) for s in plan.builds if s.sql not in rebuilt],
    )
