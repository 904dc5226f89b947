"""The switchover: writes blocked on the live database, the standby proven equal, and the names swapped.

One procedure turns either way. Forward (the Finalize phase), the source is live and the new
database takes its name; a channel back is made first, so the old database keeps following the
new one and a later rollback loses nothing. Backward (a rollback after the switchover), the new
database is live and the old one takes its name back.

The write block is ``ALLOW_CONNECTIONS false`` on the live database and the end of its client
sessions: nobody, superusers included, writes there until the names have changed. What happens
under it does not grow with the table except the proof, a checksum of every table on both sides.
A crash while it holds leaves the live database closed; the next run opens it again
(Replicate.recover_connection) and turns again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from ...api import TableVerification, Verification, duration_ms
from ...database.measure import table_checksum
from ...database.sql import quote_ident
from ...engine import records
from ...engine.context import Migration, as_admin, close_session
from ...engine.outcomes import Fail, Outcome, Wait
from ...engine.records import ReplicaRecord
from ...phases.verify import compare_content, unequal
from ...status import now, record_timing
from ...vocabulary import Reason
from .names import ReplicaNames
from .plan import allow_connections, publication, renames, slot, unsubscribe
from .sessions import maintenance, on_database
from .teardown import drop_slot, subscribed


@dataclass(frozen=True)
class Turn:
    """Which way the names turn: the live database, the standby taking its name, the channel between them."""

    live: str  # named as the application reaches it
    standby: str
    channel: str  # publication, slot and subscription carrying live -> standby
    live_becomes: str
    back_channel: str | None  # standby -> live, made under the block (forward only)

    @classmethod
    def forward(cls, names: ReplicaNames) -> Turn:
        """The source hands its name to the new database."""
        return cls(names.source, names.target, names.forward, names.old, names.back)

    @classmethod
    def backward(cls, names: ReplicaNames) -> Turn:
        """The new database hands the name back to the old one."""
        return cls(names.source, names.old, names.back, names.target, None)


# How far behind (WAL bytes) the standby may be when writes are blocked: what it applies in well under a second.
NEARLY_CAUGHT_UP = 1 << 20


class Interrupted(RuntimeError):
    """A switchover was cut off after it stopped replication: the standby may lack later writes."""


async def on_copy(m: Migration, names: ReplicaNames) -> bool:
    """Whether the control session is on the new database (the names have turned)."""
    comment = await m.session.fetchval(
        "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database "
        "WHERE datname = pg_catalog.current_database()"
    )
    return bool(comment == names.marker(m.name))


async def turn(m: Migration, turn: Turn, replica: ReplicaRecord) -> Outcome | None:
    """Block writes, wait for the standby, prove it equal, turn replication around, swap the names.

    None when the names have turned (the control session is closed: the next step reconnects, to
    the database that now has the name); otherwise why not, with the live database open again.
    """
    tables = [(schema, table) for schema, table in replica.published]
    vector_columns = {(str(s), str(t)): {str(c) for c in columns} for s, t, columns in replica.tables}
    timeout = duration_ms(m.spec.replicate.switchover_timeout) / 1000
    async with maintenance(m) as admin, on_database(m, turn.standby) as there:
        if not await subscribed(there.session, turn.channel):
            raise Interrupted(
                f"replication into {turn.standby} had already stopped when an earlier switchover was cut off"
            )
        # Writes are blocked only once the standby is close behind: the wait under the block stays short.
        nearly = await _caught_up(m, turn.channel, timeout, within=NEARLY_CAUGHT_UP, blocked=False)
        if nearly is not None:
            return nearly
        started = time.perf_counter()
        await admin.execute(allow_connections(turn.live, False))
        try:
            await _end_sessions(admin, turn.live, keep=_own_pids(m))
            waited = await _caught_up(m, turn.channel, timeout, within=0, blocked=True)
            if waited is not None:
                await admin.execute(allow_connections(turn.live, True))
                return waited
            mismatch = await _prove_equal(m, there, turn, tables, vector_columns)
            if mismatch is not None:
                await admin.execute(allow_connections(turn.live, True))
                return mismatch
            await _carry_sequences(m, there)
            await _turn_replication(m, there, turn, tables)
            blocked = time.perf_counter() - started
            keep = timedelta(milliseconds=duration_ms(m.spec.replicate.keep_old_for))
            proof = m.status.verification.tables if m.status.verification else []
            switched = records.SwitchRecord(
                drop_old_after=now(later_by=keep), switchover_seconds=round(blocked, 3), tables=proof
            )
            await records.write(there.session, m.name, records.REPLICA_SWITCHED, m.status.plan_hash or "", switched)
        except BaseException:
            with contextlib.suppress(Exception):
                await admin.execute(allow_connections(turn.live, True))
            raise
    await close_session(m)
    async with maintenance(m) as admin:
        await _rename(admin, turn)
    window = round(time.perf_counter() - started, 3)
    record_timing(m.status, "writeBlockedSeconds", window)
    if m.status.replicate is not None:
        m.status.replicate.switchover_seconds = window
    return None


async def _prove_equal(
    m: Migration,
    there: Migration,
    turn: Turn,
    tables: list[tuple[str, str]],
    vector_columns: dict[tuple[str, str], set[str]],
) -> Fail | None:
    """Every table's rows and checksum on both sides, into the status; a Fail naming those that differ."""
    compared = await compare_content(m, lambda: _checksums(m, there, tables, vector_columns))
    verification = m.status.verification or Verification(k=m.spec.verify.k)
    verification.tables = compared
    m.status.verification = verification
    different = [t.name for t in compared if unequal(t)]
    if not different:
        return None
    return Fail(
        Reason.DATA_MISMATCH,
        f"{', '.join(different)} differ between {turn.live} and {turn.standby} with writes blocked; "
        f"nothing was switched, {turn.live} is open again",
    )


async def _turn_replication(m: Migration, there: Migration, turn: Turn, tables: list[tuple[str, str]]) -> None:
    """The channel back made (its slot holds every change from here), the channel here taken apart."""
    async with as_admin(there):
        if turn.back_channel is not None:
            await there.session.execute(publication(turn.back_channel, tuple(tables)))
            await there.session.execute(slot(turn.back_channel))
        for statement in unsubscribe(turn.channel):
            await there.session.execute(statement)
    await drop_slot(m, turn.channel, turn.live)
    async with as_admin(m):
        await m.session.execute(f"DROP PUBLICATION IF EXISTS {quote_ident(turn.channel)}")


def _own_pids(m: Migration) -> list[int]:
    """The control session's backend and its heartbeat's probe."""
    probe = m.heartbeat.probe_pid if m.heartbeat is not None else None
    return [m.session.get_server_pid(), *([probe] if probe else [])]


async def _end_sessions(admin: asyncpg.Connection, database: str, *, keep: list[int]) -> None:
    """End every client session on the database but the migration's own (replication's walsender stays)."""
    await admin.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = $1 AND backend_type = 'client backend' AND pid <> ALL($2::int[])",
        database,
        keep,
    )


async def _caught_up(m: Migration, channel: str, timeout: float, *, within: int, blocked: bool) -> Outcome | None:
    """Wait until the standby has flushed all but ``within`` bytes of the WAL written so far; a Wait after ``timeout``.

    A slot no walsender streams from (its subscriber reconnecting) counts as behind.
    """
    target = await m.session.fetchval("SELECT pg_catalog.pg_current_wal_lsn()")
    started = time.monotonic()
    while True:
        row = await m.session.fetchrow(
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
                f"({m.spec.replicate.switchover_timeout}) {state}; the switchover will be tried again",
                delay=30.0,
            )
        if not blocked:
            target = await m.session.fetchval("SELECT pg_catalog.pg_current_wal_lsn()")  # writes go on
        await asyncio.sleep(0.02)


async def _checksums(
    m: Migration, there: Migration, tables: list[tuple[str, str]], vector_columns: dict[tuple[str, str], set[str]]
) -> list[TableVerification]:
    compared = []
    # As the login itself: row-level security must not hide rows from the proof.
    async with as_admin(m), as_admin(there):
        for schema, table in tables:
            vectors = vector_columns.get((schema, table), set())
            live = await table_checksum(m.session, schema, table, vectors, m.facts.checksum_mode)
            standby = await table_checksum(there.session, schema, table, vectors, m.facts.checksum_mode)
            compared.append(
                TableVerification(
                    name=f"{schema}.{table}",
                    rows_before=live.rows,
                    rows_after=standby.rows,
                    checksum_before=live.checksum,
                    checksum_after=standby.checksum,
                )
            )
    return compared


async def _carry_sequences(m: Migration, there: Migration) -> None:
    """Logical replication carries no sequence: each takes the live database's value on the standby."""
    async with as_admin(m):  # pg_sequences hides the value of a sequence the role may not read
        values = await m.session.fetch(
            "SELECT pg_catalog.format('%I.%I', schemaname, sequencename) AS name, last_value "
            "FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL"
        )
    async with as_admin(there):
        for row in values:
            await there.session.execute(
                "SELECT pg_catalog.setval($1::pg_catalog.regclass, $2, true)", row["name"], row["last_value"]
            )


async def _rename(admin: asyncpg.Connection, turn: Turn) -> None:
    """Both renames in one transaction, the live database open again under its new name.

    A rename needs nobody connected to either database: sessions are ended again right before it
    (autovacuum may have come back), a few times if need be.
    """
    for attempt in range(20):
        await admin.execute(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
            "WHERE datname = ANY($1::text[]) AND pid <> pg_catalog.pg_backend_pid()",
            [turn.live, turn.standby],
        )
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
