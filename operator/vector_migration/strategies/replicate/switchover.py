"""The switchover: writes blocked on the live database, the standby proven equal, and the names swapped.

One procedure turns either way. Forward (the Finalize phase), the source is live and the new
database takes its name; a channel back is made first, so the old database keeps following the
new one and a later rollback loses nothing. Backward (a rollback after the switchover), the new
database is live and the old one takes its name back.

The write block is ``ALLOW_CONNECTIONS false`` on the live database and the end of its client
sessions: nobody, superusers included, writes there until the names have changed. Nothing under
it grows with the tables: the checksums of both sides are taken before, at a cut of the live
side's history (proof.py), and the block shows that only replication changed the standby since.
A crash while it holds leaves the live database closed; the next run opens it again
(ToTheNewDatabase.recover_connection) and turns again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from asyncpg.transaction import Transaction

from ...api import TableVerification, duration_ms
from ...database.catalog_compare import Expected, compare
from ...database.catalog_state import CatalogState, read_catalog
from ...database.measure import table_checksum
from ...database.sql import ConnectionParams
from ...engine import records
from ...engine.context import Migration, as_admin, close_session
from ...engine.invariant import CatalogLoss
from ...engine.outcomes import Fail, Outcome, Wait
from ...engine.records import Journal
from ...phases.swap import record_catalog
from ...phases.verify import compare_content, unequal
from ...status import now, record_checksums, record_switchover, record_timing
from ...vocabulary import Reason, Timing
from .names import ReplicaNames
from .plan import (
    END_CLIENT_SESSIONS,
    END_SESSIONS_BEFORE_RENAME,
    SET_SEQUENCE,
    allow_connections,
    carried_back,
    connection_limit,
    conninfo,
    drop_publication,
    publication,
    renames,
    slot,
    subscription,
    unsubscribe,
)
from .proof import Cut, hold, others_on, reading_at, standby_sessions
from .recorded import ReplicaRecord, SwitchRecord, switch_recorded
from .sessions import maintenance, on_database, target_login
from .teardown import drop_slot, subscribed, unfence


@dataclass(frozen=True)
class Turn:
    """Which way the names turn: the live database, the standby taking its name, the channel between them."""

    live: str  # named as the application reaches it
    standby: str
    channel: str  # publication, slot and subscription carrying live -> standby
    live_becomes: str
    back_channel: str | None  # standby -> live, made under the block (forward only)
    # Across servers (replicate.target) nothing is renamed: the old database is fenced once the
    # turn is done (CONNECTION LIMIT 0, which the channel back's superuser passes).
    across_servers: bool = False

    @property
    def forwards(self) -> bool:
        """The source hands over to the new database (else the way back)."""
        return self.back_channel is not None

    @classmethod
    def forward(cls, names: ReplicaNames) -> Turn:
        """The source hands its name (across servers: its place) to the new database."""
        return cls(names.source, names.target, names.forward, names.old, names.back, names.across_servers)

    @classmethod
    def backward(cls, names: ReplicaNames) -> Turn:
        """The new database hands the name (across servers: the place) back to the old one."""
        live = names.target if names.across_servers else names.source
        return cls(live, names.old, names.back, names.target, None, names.across_servers)


@dataclass(frozen=True)
class _Proven:
    """What the switchover proves equal: the tables, and each one's vector columns (hashed by their form)."""

    tables: list[tuple[str, str]]
    vector_columns: dict[tuple[str, str], set[str]]


# How far behind (WAL bytes) the standby may be when writes are blocked: what it applies in well under a second.
NEARLY_CAUGHT_UP = 1 << 20


class Interrupted(RuntimeError):
    """A switchover was cut off after it stopped replication: the standby may lack later writes."""


async def on_copy(m: Migration, names: ReplicaNames, recorded: Journal) -> bool:
    """Whether the new database is the live one.

    Same server: the control session is on it (the names have turned). Across servers the control
    session stays on the old database: its journal records the switchover.
    """
    if names.across_servers:
        return switch_recorded(recorded) is not None
    comment = await m.session.fetchval(
        "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database "
        "WHERE datname = pg_catalog.current_database()"
    )
    return bool(comment == names.marker(m.name))


@contextlib.asynccontextmanager
async def _sides(m: Migration, turn: Turn) -> AsyncIterator[tuple[Migration, Migration, asyncpg.Connection]]:
    """The live database's session, the standby's, and the live server's maintenance session.

    The control session is on the live database, except across servers on the way back, where it
    stays on the old database (the standby) and the new one is reached on the other server.
    """
    elsewhere = m.inputs.target_server
    if turn.across_servers and not turn.forwards:
        async with maintenance(m, elsewhere) as admin, on_database(m, turn.live, server=elsewhere) as live:
            yield live, m, admin
        return
    standby_server = elsewhere if turn.across_servers else None
    async with maintenance(m) as admin, on_database(m, turn.standby, server=standby_server) as standby:
        yield m, standby, admin


async def turn(m: Migration, turn: Turn, replica: ReplicaRecord) -> Outcome | None:
    """Block writes, wait for the standby, prove it equal, turn replication around, swap the names.

    None when the names have turned (the control session is closed: the next step reconnects, to
    the database that now has the name) or, across servers, the new database is live; otherwise
    why not, with the live database open again.
    """
    tables = [(published.table_schema, published.table) for published in replica.published]
    if not turn.forwards:  # the way back: what the channel back carried
        tables = list(carried_back(tuple(tables), across_servers=turn.across_servers))
    proven = _Proven(tables, {(str(s), str(t)): {str(c) for c in columns} for s, t, columns in replica.tables})
    timeout = duration_ms(m.spec.replicate.switchover_timeout) / 1000
    async with _sides(m, turn) as (live, standby, admin):
        if not await subscribed(standby.session, turn.channel):
            raise Interrupted(
                f"replication into {turn.standby} had already stopped when an earlier switchover was cut off"
            )
        # Writes are blocked only once the standby is close behind: the wait under the block stays short.
        nearly = await _caught_up(live, turn.channel, timeout, within=NEARLY_CAUGHT_UP, blocked=False)
        if nearly is not None:
            return nearly
        expected = Expected.of_document(replica.catalog) if turn.forwards and replica.catalog else None
        cut = await _prove_at_a_cut(m, live, standby, turn, proven, timeout, expected)
        if not isinstance(cut, Cut):
            return cut
        started = time.perf_counter()
        await admin.execute(allow_connections(turn.live, False))
        try:
            await _end_sessions(admin, turn.live, keep=_own_pids(m, live))
            waited = await _caught_up(live, turn.channel, timeout, within=0, blocked=True)
            waited = waited or await _still_as_proven(m, live, standby, turn, proven, cut)
            if waited is not None:
                await admin.execute(allow_connections(turn.live, True))
                return waited
            await _carry_sequences(live, standby)
            await _turn_replication(m, live, standby, turn, tables)
            await _record_turn(m, live, standby, turn, started)
            if turn.across_servers and turn.forwards:
                async with admin.transaction():  # fenced from the application, open to the channel back
                    await admin.execute(connection_limit(turn.live, 0))
                    await admin.execute(allow_connections(turn.live, True))
        except BaseException:
            with contextlib.suppress(Exception):
                await admin.execute(allow_connections(turn.live, True))
            raise
    if turn.across_servers:
        if not turn.forwards:  # the old database is live again, with its own limit
            await unfence(m, turn.standby, replica.source_connection_limit)
    else:
        await close_session(m)
        async with maintenance(m) as admin:
            await _rename(admin, turn)
    window = round(time.perf_counter() - started, 3)
    record_timing(m.status, Timing.WRITE_BLOCKED, window)
    record_switchover(m.status, window, turn.forwards)  # where the application goes (<name>-target)
    return None


async def _record_turn(m: Migration, live: Migration, standby: Migration, turn: Turn, started: float) -> None:
    """The journal's record of the turn, where the next run reads it.

    Same server: the switchover's record in the standby, which is about to take the name. Across
    servers the control session stays on the old database: forward, the channel back is
    subscribed there and the switchover recorded in one transaction (on_copy reads it); backward,
    _turn_replication took the record away with the channel.
    """
    keep = timedelta(milliseconds=duration_ms(m.spec.replicate.keep_old_for))
    proof = m.status.verification.tables if m.status.verification else []
    switched = SwitchRecord(
        drop_old_after=now(later_by=keep), switchover_seconds=round(time.perf_counter() - started, 3), tables=proof
    )
    plan_hash = m.status.plan_hash or ""
    if not turn.across_servers:
        await records.write(standby.session, m.name, records.REPLICA_SWITCHED, plan_hash, switched)
        return
    if turn.forwards:
        back = conninfo(target_login(m), turn.standby, with_password=True)
        async with as_admin(live), live.session.transaction():
            await live.session.execute(subscription(turn.back_channel or "", back, copy_data=False))
            await records.write(live.session, m.name, records.REPLICA_SWITCHED, plan_hash, switched)


# size: the hold, both snapshots and what is proven in them, in the one order that makes them a cut
async def _prove_at_a_cut(
    m: Migration,
    live: Migration,
    standby: Migration,
    turn: Turn,
    proven: _Proven,
    timeout: float,
    expected: Expected | None = None,
) -> Cut | Outcome:
    """Both sides checksummed at one point of the live side's history, with writes going on (proof.py).

    The live side's tables are held only until the standby has confirmed that point. A Wait when
    it does not within switchoverTimeout, or a writer keeps its lock past lockTimeout; a Fail
    naming the tables that differ. With ``expected`` (what the plan changes of the catalog), both
    catalogs are compared in the same snapshots: a Fail naming what else differs (a change to the
    live side's schema since the copy: logical replication carries no DDL).
    """
    async with on_database(m, turn.live, server=_live_server(m, turn)) as reader:
        started = time.perf_counter()
        held = await hold(live, proven.tables)
        if held is None:
            return Wait(
                Reason.LOCK_TIMEOUT,
                f"a writer held a table of {turn.live} past lockTimeout ({m.spec.lock_timeout}) when the "
                "switchover's proof asked to hold it; the switchover will be tried again",
                delay=30.0,
            )
        holding, snapshot = held
        reading: list[Transaction] = []
        try:
            reading.append(await reading_at(reader.session, snapshot))
            waited = await _caught_up(live, turn.channel, timeout, within=0, blocked=True)
            if waited is not None:
                return waited
            sessions = await standby_sessions(standby.session)
            reading.append(await reading_at(standby.session, None))
            await holding.commit()  # writes go on; both snapshots stay
            held_seconds = round(time.perf_counter() - started, 3)
            # The catalogs first: a change to the live side's schema explains any difference of content
            catalog, mismatch = None, None
            if expected is not None:
                catalog = await read_catalog(reader.session)
                mismatch = _catalogs_differ(m, catalog, await read_catalog(standby.session), expected, turn)
            mismatch = mismatch or await _prove_equal(m, reader, standby, turn, proven, "at a cut of its history")
        finally:
            for transaction in (*reversed(reading), holding):
                with contextlib.suppress(asyncpg.InterfaceError):  # one already committed
                    await transaction.rollback()
    record_timing(m.status, Timing.PROOF_HELD_WRITES, held_seconds)
    return mismatch or Cut(sessions=sessions, catalog=catalog)


def _catalogs_differ(
    m: Migration, live: CatalogState, standby: CatalogState, expected: Expected, turn: Turn
) -> Fail | None:
    """The standby's catalog against the live one's, translated by the plan: a Fail naming what else differs."""
    comparison = compare(live, standby, expected)
    record_catalog(m, comparison)
    if not comparison.differences:
        return None
    return Fail(
        Reason.CATALOG_MISMATCH,
        f"{turn.standby} is not {turn.live} as the plan makes it ({CatalogLoss(comparison)}); a change to "
        f"{turn.live}'s schema since the copy is not replicated. Nothing was switched, {turn.live} is open: "
        "roll back and migrate again",
    )


async def _still_as_proven(
    m: Migration, live: Migration, standby: Migration, turn: Turn, proven: _Proven, cut: Cut
) -> Fail | None:
    """Under the block: the live side's schema as at the cut, and the standby written by replication alone since.

    Where another session came to the standby, both sides are checksummed again with writes blocked.
    """
    if cut.catalog is not None:
        changed = await _schema_as_at_the_cut(live, cut.catalog, turn)
        if changed is not None:
            return changed
    if await _only_replication_since(m, standby, turn, cut):
        return None
    return await _prove_equal(m, live, standby, turn, proven, "with writes blocked")


async def _schema_as_at_the_cut(live: Migration, at_the_cut: CatalogState, turn: Turn) -> Fail | None:
    """Under the block: the live side's catalog as it was at the cut (a change since would not reach the standby)."""
    comparison = compare(at_the_cut, await read_catalog(live.session), Expected())
    if not comparison.differences:
        return None
    return Fail(
        Reason.CATALOG_MISMATCH,
        f"{turn.live}'s schema changed after the switchover's proof ({CatalogLoss(comparison)}); it is not "
        f"replicated to {turn.standby}. Nothing was switched, {turn.live} is open",
    )


async def _only_replication_since(m: Migration, standby: Migration, turn: Turn, cut: Cut) -> bool:
    """Whether no session but the migration's own has been on the standby since the cut (else a warning why not)."""
    others = await others_on(standby.session, _own_pids(m, standby))
    came = await standby_sessions(standby.session) - cut.sessions
    if not others and came <= 0:
        return True
    m.warn(
        f"{came} session(s) came to {turn.standby} after the switchover's proof (open now: {len(others)}): "
        "its tables were checksummed again with writes blocked"
    )
    return False


async def _prove_equal(
    m: Migration, live: Migration, standby: Migration, turn: Turn, proven: _Proven, when: str
) -> Fail | None:
    """Every table's rows and checksum on both sides, into the status; a Fail naming those that differ."""
    compared = await compare_content(m, lambda: _checksums(live, standby, proven))
    record_checksums(m.status, m.spec.verify.k, compared)
    different = [t.name for t in compared if unequal(t)]
    if not different:
        return None
    return Fail(
        Reason.DATA_MISMATCH,
        f"{', '.join(different)} differ between {turn.live} and {turn.standby} {when}; "
        f"nothing was switched, {turn.live} is open",
    )


def _live_server(m: Migration, turn: Turn) -> ConnectionParams | None:
    """The live database's server: the other one on the way back across servers, else the source's."""
    return m.inputs.target_server if turn.across_servers and not turn.forwards else None


async def _turn_replication(
    m: Migration, live: Migration, standby: Migration, turn: Turn, tables: list[tuple[str, str]]
) -> None:
    """The channel back made (its slot holds every change from here), the channel here taken apart.

    Across servers on the way back the old database's subscription goes with the journal's record
    of the switchover, in one transaction: the next run finds both or neither.
    """
    async with as_admin(standby):
        if turn.back_channel is not None:
            back_tables = carried_back(tuple(tables), across_servers=turn.across_servers)
            await standby.session.execute(publication(turn.back_channel, back_tables))
            await standby.session.execute(slot(turn.back_channel))
        async with contextlib.AsyncExitStack() as stack:
            if turn.across_servers and not turn.forwards:
                await stack.enter_async_context(standby.session.transaction())
                await records.forget(standby.session, m.name, records.REPLICA_SWITCHED)
            for statement in unsubscribe(turn.channel):
                await standby.session.execute(statement)
    await drop_slot(m, turn.channel, turn.live, _live_server(m, turn))
    async with as_admin(live):
        await live.session.execute(drop_publication(turn.channel))


def _own_pids(m: Migration, side: Migration) -> list[int]:
    """A side's session backend, and the control session's heartbeat probe when that side is the control session."""
    probe = m.heartbeat.probe_pid if m.heartbeat is not None and side is m else None
    return [side.session.get_server_pid(), *([probe] if probe else [])]


async def _end_sessions(admin: asyncpg.Connection, database: str, *, keep: list[int]) -> None:
    """End every client session on the database but the migration's own (replication's walsender stays)."""
    await admin.execute(END_CLIENT_SESSIONS, database, keep)  # the plan's (ReplicatePlan._turn)


async def _caught_up(live: Migration, channel: str, timeout: float, *, within: int, blocked: bool) -> Outcome | None:
    """Wait until the standby has flushed all but ``within`` bytes of the live server's WAL; a Wait after ``timeout``.

    A slot no walsender streams from (its subscriber reconnecting) counts as behind.
    """
    target = await live.session.fetchval("SELECT pg_catalog.pg_current_wal_lsn()")
    started = time.monotonic()
    while True:
        row = await live.session.fetchrow(
            "SELECT pg_catalog.pg_wal_lsn_diff($2::pg_catalog.pg_lsn, confirmed_flush_lsn)::bigint AS behind, active "
            "FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            channel,
            target,
        )
        behind = row["behind"] if row is not None else None
        if behind is not None and behind <= within and (row["active"] or within == 0):
            return None
        if time.monotonic() - started > timeout:
            state = "with writes blocked; writes are open again" if blocked else "before writes were blocked"
            return Wait(
                Reason.REPLICATION_LAGGING,
                f"the new database was still {behind} bytes behind after switchoverTimeout "
                f"({live.spec.replicate.switchover_timeout}) {state}; the switchover will be tried again",
                delay=30.0,
            )
        if not blocked:
            target = await live.session.fetchval("SELECT pg_catalog.pg_current_wal_lsn()")  # writes go on
        await asyncio.sleep(0.02)


async def _checksums(live: Migration, standby: Migration, proven: _Proven) -> list[TableVerification]:
    compared = []
    # As the login itself: row-level security must not hide rows from the proof.
    async with as_admin(live), as_admin(standby):
        for schema, table in proven.tables:
            vectors = proven.vector_columns.get((schema, table), set())
            mode = live.facts.checksum_mode
            before = await table_checksum(live.session, schema, table, vectors, mode)
            after = await table_checksum(standby.session, schema, table, vectors, mode)
            compared.append(before.against(f"{schema}.{table}", after))
    return compared


async def _carry_sequences(live: Migration, there: Migration) -> None:
    """Logical replication carries no sequence: each takes the live database's value on the standby."""
    async with as_admin(live):  # pg_sequences hides the value of a sequence the role may not read
        values = await live.session.fetch(
            "SELECT pg_catalog.format('%I.%I', schemaname, sequencename) AS name, last_value "
            "FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL"
        )
    async with as_admin(there):
        for row in values:
            await there.session.execute(SET_SEQUENCE, row["name"], row["last_value"])  # the plan's, bound


async def _rename(admin: asyncpg.Connection, turn: Turn) -> None:
    """Both renames in one transaction, the live database open again under its new name.

    A rename needs nobody connected to either database: sessions are ended again right before it
    (autovacuum may have come back), a few times if need be.
    """
    for attempt in range(20):
        await admin.execute(END_SESSIONS_BEFORE_RENAME, [turn.live, turn.standby])  # the plan's
        try:
            async with admin.transaction():
                for statement in renames([(turn.live, turn.live_becomes), (turn.standby, turn.live)]):
                    await admin.execute(statement)
                await admin.execute(allow_connections(turn.live_becomes, True))
            return
        except asyncpg.ObjectInUseError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.1)
