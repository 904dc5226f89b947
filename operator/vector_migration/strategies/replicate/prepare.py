"""Prepare: the new database, the source's schema in it converted to the target, and a subscription copying the rows.

Nothing here touches the application's tables: the source gains only a publication and a slot.
An attempt interrupted anywhere before its journal record is taken apart and made again by the
next run (tear_down_replica); after the record, the next run continues with the copy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

import asyncpg

from ...api import ReplicatedTable, ReplicateStatus
from ...database.backup import BackupError, BackupPending, SchemaCopyRequest
from ...database.catalog import read_extension
from ...database.catalog_compare import Expected, compare
from ...database.catalog_state import read_catalog
from ...database.journal import JOURNAL
from ...database.sql import quote_ident
from ...engine import continuation, records
from ...engine.context import Migration, as_admin
from ...engine.invariant import CatalogLoss, expected_of
from ...engine.outcomes import Advance, Fail, Outcome, Wait
from ...engine.records import IndexBuild, Journal, ReplicaRecord
from ...engine.transactions import (
    PlanDrift,
    Progress,
    Ready,
    begin_bounded_transaction,
    ready_to_change,
    roll_back,
    transaction_failure,
)
from ...phases.swap import catalog_lost, check_plan_unchanged, convert, replan_after_drift
from ...status import record_replicate, set_condition
from ...vocabulary import ConditionType, Phase, Reason
from .names import ReplicaNames
from .plan import ReplicatePlan, conninfo, publication, slot, subscription
from .sessions import login, maintenance, names_of, on_new_database, target_login
from .teardown import database_exists, subscribed, tear_down_replica

# A phase after the new database was made, run where the journal records none: plan again from the start.
START_OVER = Advance(Phase.CHECKLIST, "no new database is recorded; starting from the checklist")


async def recorded_replica(m: Migration) -> tuple[Journal, ReplicaRecord | None]:
    """The journal, and the new database's record (None before it exists), with the run's facts loaded."""
    recorded = await records.read(m.session, m.name)
    replica = recorded.replica
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
    """pg_dump --schema-only | pg_restore (here or in a Job), unless the new database has the schema.

    The restore is one transaction: the journal's table, which the source always has by now, is
    there only when everything is.
    """
    async with on_new_database(m, plan.names) as there:
        if await there.session.fetchval("SELECT pg_catalog.to_regclass($1) IS NOT NULL", JOURNAL):
            return
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
    """The InPlace conversion on the new database's empty tables, in one transaction; a Fail when it cannot.

    Skipped when the new database no longer has the source extension: the conversion, which drops
    it last, committed.
    """
    names = plan.names
    async with on_new_database(m, names) as there:
        if await read_extension(there.session, m.spec.source.extension) is None:
            return None
        copied = compare(await read_catalog(m.session), await read_catalog(there.session), SEQUENCES_LATER)
        if copied.differences:
            return Fail(
                Reason.CATALOG_MISMATCH,
                f"the schema copied into {names.target} is not {names.source}'s: {CatalogLoss(copied)}; "
                "the application's database was not changed",
            )
        expected = catalog_expected(m, plan, ready, built_later=True)
        progress = Progress()
        transaction = await begin_bounded_transaction(there)
        try:
            statements = list(plan.schema)
            await convert(
                there, statements, ready.inventory, ready.surface, m.facts.checksum_mode, progress, None, None, expected
            )
            await transaction.commit()
        except CatalogLoss as error:
            await roll_back(transaction)
            return await catalog_lost(m, error, f"conversion of {names.target}", there.session)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, PlanDrift) as error:
            await roll_back(transaction)
            return transaction_failure(error, progress, m.spec, "swap")
    return None


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
        published=[[s, t] for s, t in plan.tables],
        endpoint=plan.endpoint,
        source_connection_limit=connection_limit,
        builds=[[s.step.value, s.sql, s.run_as or ""] for s in plan.builds if s.sql not in rebuilt],
    )
