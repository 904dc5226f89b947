"""The copy and what follows it on the new database: the initial copy streamed, the indexes built, the result measured.

The application keeps writing to the source throughout; the subscription applies every change
to the new database in commit order. Index builds there block only the subscription's apply,
which catches up afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from ...api import ReplicatedTable, Verification, duration_ms
from ...database.catalog import index_state, read_extension
from ...engine import records
from ...engine.context import Migration
from ...engine.outcomes import Advance, Fail, Outcome
from ...engine.transactions import bounded_reads
from ...phases.cutover import walk_cutover
from ...phases.judge import Judgement, judge_probes
from ...phases.reindex import IndexBuildFailed, analyze, build_index
from ...phases.verify import fail_verification, hold_for_a_decision
from ...status import record_replication_progress, record_verification, set_condition
from ...vocabulary import ConditionType, Phase, Reason
from .prepare import Recorded, recorded_or_start_over
from .sessions import on_new_database

# Sync workers retry a failed table copy; this many failures means a value the target refuses.
MAX_SUBSCRIPTION_ERRORS = 3
_STATES = {"i": "starting", "d": "copying", "f": "copied", "s": "catching up", "r": "streaming"}


async def run_initial_copy(m: Migration) -> Outcome:
    """Wait for the subscription to copy every table, reporting each table's state and the lag."""
    found = await recorded_or_start_over(m)
    if not isinstance(found, Recorded):
        return found
    names = found.names
    limit = duration_ms(m.spec.statement_timeout) / 1000 or float("inf")
    started = time.monotonic()
    async with on_new_database(m, names) as there:
        while True:
            states = await there.session.fetch(
                """
                SELECT n.nspname || '.' || c.relname AS name, r.srsubstate::text AS state, c.oid AS relid
                  FROM pg_catalog.pg_subscription_rel r
                  JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
                  JOIN pg_catalog.pg_class c ON c.oid = r.srrelid
                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE s.subname = $1 ORDER BY 1
                """,
                names.forward,
            )
            failures = await there.session.fetchval(
                "SELECT apply_error_count + sync_error_count FROM pg_catalog.pg_stat_subscription_stats "
                "WHERE subname = $1",
                names.forward,
            )
            copied = [r for r in states if r["state"] in ("s", "r")]
            await _report(m, there, states, names.forward)
            lag = m.status.replicate.lag_bytes if m.status.replicate else None
            m.reporter.progress("initial copy", len(copied), len(states) or None, f"lag {lag} bytes")
            if failures and failures >= MAX_SUBSCRIPTION_ERRORS:
                return Fail(
                    Reason.SWAP_FAILED,
                    f"the subscription into {names.target} failed {failures} times to copy or apply rows "
                    "(the server log says why: a value the target type refuses?)",
                )
            if states and len(copied) == len(states):
                break
            if time.monotonic() - started > limit:
                return Fail(
                    Reason.STATEMENT_TIMEOUT,
                    f"the initial copy took longer than statementTimeout ({m.spec.statement_timeout})",
                )
            await asyncio.sleep(0.5)
    m.reporter.task_done("initial copy")
    message = f"{len(copied)} table(s) copied into {names.target}; streaming the application's writes"
    set_condition(m.status, ConditionType.REPLICA_SYNCED, True, Reason.COMPLETED, message, m.generation)
    return Advance(Phase.REINDEX, message)


async def _report(m: Migration, there: Migration, states: list[asyncpg.Record], slot_name: str) -> None:
    """Each table's state and the rows copied so far (COPY progress), and the slot's lag, into the status."""
    if m.status.replicate is None:
        return
    progress = {
        r["relid"]: r["tuples_processed"]
        for r in await there.session.fetch("SELECT relid, tuples_processed FROM pg_catalog.pg_stat_progress_copy")
    }
    tables = [
        ReplicatedTable(name=r["name"], state=_STATES.get(r["state"], r["state"]), rows=progress.get(r["relid"]))
        for r in states
    ]
    record_replication_progress(m.status, tables, await lag_bytes(m.session, slot_name))


async def lag_bytes(conn: asyncpg.Connection, slot_name: str) -> int | None:
    """How far the slot's subscriber is behind the server's WAL, in bytes (None: no such slot)."""
    value = await conn.fetchval(
        "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
        "FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        slot_name,
    )
    return int(value) if value is not None else None


async def run_replica_reindex(m: Migration) -> Outcome:
    """Build the vector indexes (and carried ones) on the new database, now that its rows are there."""
    found = await recorded_or_start_over(m)
    if not isinstance(found, Recorded):
        return found
    names, replica = found.names, found.replica
    async with on_new_database(m, names) as there:
        try:
            for rebuild in m.facts.rebuilds:
                await build_index(
                    there,
                    rebuild.index_schema,
                    rebuild.name,
                    rebuild.definition,
                    rebuild.method,
                    partitioned=rebuild.partitioned,
                )
        except IndexBuildFailed as error:
            return Fail(Reason.REINDEX_FAILED, f"{error}; the application still runs on {names.source}, untouched")
        for build in replica.builds:
            with contextlib.suppress(asyncpg.DuplicateTableError):  # built by an earlier run
                await there.session.execute(build.sql)
        await analyze(there, m.facts.tables)
    message = f"{len(m.facts.rebuilds) + len(replica.builds)} index(es) built on {names.target}"
    set_condition(m.status, ConditionType.INDEXES_REBUILT, True, Reason.COMPLETED, message, m.generation)
    await records.write(m.session, m.name, records.REINDEXED, m.status.plan_hash or "", records.ReindexRecord())
    return Advance(Phase.VERIFY, message)


async def run_replica_verify(m: Migration) -> Outcome:
    """On the new database: no source extension, every index valid, recall and latency held against the baseline."""
    found = await recorded_or_start_over(m)
    if not isinstance(found, Recorded):
        return found
    names = found.names
    async with on_new_database(m, names) as there:
        return await bounded_reads(there, "verification", _verify_replica)


async def _verify_replica(m: Migration) -> Outcome:
    judgement = await analyse_replica(m)
    if judgement.problems:
        after = "; the application still runs on the source"
        return fail_verification(m, judgement.problems, "verification failed on the new database: ", after=after)
    if judgement.held:
        return hold_for_a_decision(m, judgement.held, "the new database is streaming, its indexes valid")
    verification = m.status.verification
    recalls = [v.recall_after for v in verification.indexes if v.recall_after is not None] if verification else []
    message = f"{len(m.facts.rebuilds)} index(es) valid on the new database" + (
        f"; lowest recall@{m.spec.verify.k} {min(recalls):.3f}" if recalls else ""
    )
    if m.spec.cutover.steps:
        return Advance(Phase.CUTOVER, f"{message}; cutover steps next")
    return Advance(Phase.FINALIZE, f"{message}; switching over")


async def analyse_replica(m: Migration) -> Judgement:
    """On the new database's session: no source extension, every index valid, recall and latency held."""
    problems: list[tuple[Reason, str]] = []
    verification = m.status.verification or Verification(k=m.spec.verify.k)
    if await read_extension(m.session, m.spec.source.extension) is not None:
        problems.append((Reason.VERIFICATION_FAILED, f"extension {m.spec.source.extension} is in the new database"))
    for rebuild in m.facts.rebuilds:
        state = await index_state(m.session, rebuild.index_schema, rebuild.name)
        if state is None or not state[0] or state[1] != rebuild.method:
            wrong = f"index {rebuild.name} is missing, INVALID or not on {rebuild.method}"
            problems.append((Reason.VERIFICATION_FAILED, wrong))
    judgement = await judge_probes(m, m.facts.probes, verification)
    record_verification(m.status, verification)
    return Judgement(problems + judgement.problems, judgement.held)


async def run_replica_cutover(m: Migration) -> Outcome:
    """The spec's cutover steps, each re-analysed on the new database, while reads are weighted onto it."""
    found = await recorded_or_start_over(m)
    if not isinstance(found, Recorded):
        return found
    names = found.names

    async def on_the_new_database(run: Migration) -> Judgement:
        async with on_new_database(run, names) as there:
            return await analyse_replica(there)

    return await walk_cutover(m, on_the_new_database, "the new database")
