"""Finalize (the switchover and what follows it), rollback either side of it, and the clean-up after keepOldFor."""

from __future__ import annotations

from ...api import VectorMigrationStatus
from ...engine import records
from ...engine.context import Migration
from ...engine.outcomes import Advance, Fail, Outcome
from ...engine.records import Journal, RollbackRecord
from ...phases.verify import record_success
from ...status import record_replication_stopped, record_switched, seconds_since, set_condition
from ...vocabulary import ConditionType, Phase, Reason
from .names import ReplicaNames
from .plan import connection_limit, conninfo, subscription
from .prepare import Recorded, recorded_or_start_over, recorded_replica
from .recorded import ReplicaRecord, replica_recorded, switch_recorded
from .sessions import admin_execute, login, maintenance, names_of, on_database
from .switchover import Interrupted, Turn, on_copy, turn
from .teardown import drop_database, stop_reverse_replication, subscribed, tear_down_replica


async def run_switchover(m: Migration) -> Outcome:
    """Switch the application's database name to the new database, then make the old one follow it."""
    found = await recorded_or_start_over(m)
    if not isinstance(found, Recorded):
        return found
    names = found.names
    if await on_copy(m, names, found.journal):
        return await _after_switchover(m, names, found.journal)
    try:
        stopped = await turn(m, Turn.forward(names), found.replica)
    except Interrupted as error:
        return Fail(
            Reason.SWAP_FAILED,
            f"{error}; {names.target} may lack writes made since. The application is on {names.source}, "
            "untouched: roll back (it drops the new database) and migrate again",
        )
    if stopped is not None:
        return stopped
    window = m.status.replicate.switchover_seconds if m.status.replicate else None
    return Advance(Phase.FINALIZE, f"switched over: {_where_it_is(names, found.replica)} (writes blocked {window}s)")


def _where_it_is(names: ReplicaNames, replica: ReplicaRecord) -> str:
    """Where the migrated database is after the switchover, as a person reads it."""
    if replica.endpoint is None:
        return f"{names.source} is now the migrated database"
    return (
        f"the migrated database is {replica.endpoint}; point the application there ({names.source} "
        "refuses its connections from now on: CONNECTION LIMIT 0)"
    )


async def _after_switchover(m: Migration, names: ReplicaNames, recorded: Journal) -> Outcome:
    """On the new database, under the application's name: the old database follows it until keepOldFor."""
    switched = switch_recorded(recorded)
    if switched is None:
        return Fail(Reason.JOURNAL_UNREADABLE, f"{names.source} is the new database but its journal has no switchover")
    if names.across_servers:
        # The turn subscribed the old database itself; a run cut off before its fence fences it now.
        async with maintenance(m) as admin:
            if await admin.fetchval("SELECT datconnlimit FROM pg_catalog.pg_database WHERE datname = $1", names.old):
                await admin.execute(connection_limit(names.old, 0))
    else:
        async with on_database(m, names.old) as old:
            if not await subscribed(old.session, names.back):
                connection = conninfo(login(m), names.source, with_password=True)
                await admin_execute(old, subscription(names.back, connection, copy_data=False))
    record_switched(m.status, switched.drop_old_after, switched.switchover_seconds, switched.tables)
    status = m.status.replicate
    seconds = status.switchover_seconds if status else switched.switchover_seconds
    replica = replica_recorded(recorded)
    where = _where_it_is(names, replica) if replica is not None else f"{names.source} is the migrated database"
    message = (
        f"{where}; writes were blocked {seconds}s for the switchover, every table "
        f"equal; {names.old} follows it until {switched.drop_old_after} (replicate.keepOldFor)"
    )
    set_condition(m.status, ConditionType.FINALIZED, True, Reason.COMPLETED, message, m.generation)
    set_condition(m.status, ConditionType.VERIFIED, True, Reason.PASSED, message, m.generation)
    await record_success(m, message)
    return Advance(Phase.SUCCEEDED, message)


async def run_replica_rollback(m: Migration) -> Outcome:
    """Back to the source: the new database dropped before the switchover, the names turned back after it."""
    recorded, replica = await recorded_replica(m)
    names = await names_of(m, recorded)
    if replica is not None and await on_copy(m, names, recorded):
        try:
            stopped = await turn(m, Turn.backward(names), replica)
        except Interrupted as error:
            return Fail(Reason.ROLLBACK_FAILED, f"{error}; nothing was switched back")
        if stopped is not None:
            return stopped if not isinstance(stopped, Fail) else Fail(Reason.ROLLBACK_FAILED, stopped.message)
        return Advance(Phase.ROLLING_BACK, f"switched back: {names.source} is the pgvector database again")
    await tear_down_replica(m, names, m.name, replica.source_connection_limit if replica else None)
    await records.forget_all_but_rollback(m.session, m.name, m.status.plan_hash or "", RollbackRecord())
    message = f"{names.source} is as it was before the migration; {names.target} and its replication are gone"
    set_condition(m.status, ConditionType.ROLLED_BACK, True, Reason.ROLLED_BACK, message, m.generation)
    return Advance(Phase.ROLLED_BACK, message)


def seconds_until_replication_stops(status: VectorMigrationStatus) -> float | None:
    """For a succeeded Replicate migration whose old database still follows: seconds until it may stop."""
    replicate = status.replicate
    if replicate is None or replicate.replication_stopped or replicate.drop_old_after is None:
        return None
    return max(0.0, -seconds_since(replicate.drop_old_after))


async def stop_following(m: Migration) -> str:
    """After keepOldFor: the old database stops following (its channel goes), and is dropped if asked."""
    recorded, _ = await recorded_replica(m)
    names = await names_of(m, recorded)
    await stop_reverse_replication(m, names)
    dropped = False
    if m.spec.replicate.drop_old:
        await drop_database(m, names.old, None)
        dropped = True
    record_replication_stopped(m.status, dropped)
    await records.write(m.session, m.name, records.REPLICA_STOPPED, m.status.plan_hash or "", records.Record())
    verified = m.status.model_copy(deep=True)
    await records.write(
        m.session, m.name, records.VERIFIED, m.status.plan_hash or "", records.VerifiedRecord(status=verified)
    )
    return f"replication into {names.old} stopped" + (
        f" and {names.old} dropped (replicate.dropOld)"
        if dropped
        else f"; {names.old} stays (replicate.dropOld: false)"
    )
