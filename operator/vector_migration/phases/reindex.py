"""Reindex: build the indexes the swap left for after its commit, repairing INVALID leftovers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from ..api import pg_setting_duration
from ..database.catalog import (
    index_state,
)
from ..database.ddl import analyze_sql
from ..database.sql import (
    connect,
    qualify,
)
from ..engine import records
from ..engine.context import Migration
from ..engine.continuation import ensure_swap_facts
from ..engine.outcomes import Advance, Fail, Outcome
from ..engine.plan import index_comment
from ..engine.transactions import execute
from ..status import set_condition
from ..vocabulary import (
    ConditionType,
    Phase,
    Reason,
)


@contextlib.asynccontextmanager
async def index_progress(m: Migration, statement: str | None) -> AsyncIterator[None]:
    """While an index builds on the control session, report pg_stat_progress_create_index."""
    if statement is None:
        yield
        return
    pid = m.session.get_server_pid()
    label = statement.split(" ON ", 1)[0].removeprefix("CREATE INDEX ").removeprefix("CONCURRENTLY ")
    watcher = await connect(m.params)

    async def watch() -> None:
        while True:
            row = await watcher.fetchrow(
                """
                SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
                  FROM pg_catalog.pg_stat_progress_create_index WHERE pid = $1
                """,
                pid,
            )
            if row is not None:
                done, total = row["blocks_done"], row["blocks_total"]
                if not total:
                    done, total = row["tuples_done"], row["tuples_total"]
                m.reporter.progress(f"index {label}", done, total or None, row["phase"])
            await asyncio.sleep(0.5)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await watcher.close()
        m.reporter.task_done(f"index {label}")


async def run_reindex(m: Migration) -> Outcome:
    """Build every index the swap left for after the commit; repair INVALID leftovers."""
    conn = m.session
    missing = await ensure_swap_facts(m)
    if missing is not None:
        return missing
    built = 0
    try:
        for rebuild in m.facts.rebuilds:
            built += await build_index(m, rebuild.index_schema, rebuild.name, rebuild.definition, rebuild.method)
            for comment in index_comment(rebuild.index_schema, rebuild.name, rebuild.comment):
                await execute(m, comment)  # the plan's (afterCommit): the same text, however often this runs
    except IndexBuildFailed as error:
        return Fail(Reason.REINDEX_FAILED, f"{error}; the data is migrated and intact, the index is not")
    await analyze(m, m.facts.tables)
    total = len(m.facts.rebuilds)
    message = f"{total} index(es) on the target access methods ({built} built after the swap)"
    set_condition(m.status, ConditionType.INDEXES_REBUILT, True, Reason.COMPLETED, message, m.generation)
    await records.write(conn, m.name, records.REINDEXED, m.status.plan_hash or "", records.ReindexRecord(built=built))
    return Advance(Phase.VERIFY, message)


class IndexBuildFailed(RuntimeError):
    """An index build failed three times; the message says why."""


async def build_index(
    m: Migration, schema: str, name: str, definition: str, method: str | None = None, *, partitioned: bool = False
) -> bool:
    """Build one index outside the swap transaction: whether it was built now (False: a valid one was there).

    An INVALID index (what an interrupted CREATE INDEX CONCURRENTLY leaves) or one on another
    access method is dropped and built again; each build is bounded by statementTimeout and gets
    three attempts, after which IndexBuildFailed says why. A ``partitioned`` one (made ON ONLY a
    partitioned table) is INVALID until its partitions' are attached: there is the one to keep.
    """
    conn = m.session
    state = await index_state(conn, schema, name)
    if state is not None and (state[0] or partitioned) and (method is None or state[1] == method):
        return False
    attempts = 0
    while True:
        attempts += 1
        if state is not None:
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualify(schema, name)}")
        try:
            await run_build(m, definition)
            return True
        except asyncpg.PostgresError as error:
            state = await index_state(conn, schema, name)
            if attempts >= 3:
                set_condition(m.status, ConditionType.INDEXES_REBUILT, False, Reason.REINDEX_FAILED, str(error))
                raise IndexBuildFailed(f"building index {name} failed {attempts} times ({error})") from None
            m.reporter.warning(f"building {name} failed ({error}); retrying")


async def analyze(m: Migration, tables: list[tuple[str, str]]) -> None:
    """Fresh planner statistics for converted tables: ALTER COLUMN ... TYPE drops a column's, a shadow has none.

    Without them the planner may not use an index the source's planner used, and verification would
    blame the index. ANALYZE runs the table owner's index expressions as that owner (PostgreSQL's
    own rule), and takes no lock that blocks writes.
    """
    for schema, table in tables:
        m.reporter.progress("analyze", note=f"{schema}.{table}")
        await m.session.execute(analyze_sql(schema, table))
    m.reporter.task_done("analyze")


async def run_build(m: Migration, statement: str) -> None:
    """An index build (CREATE INDEX, REINDEX) outside any transaction, bounded and reported.

    maintenance_work_mem and statement_timeout are the spec's for the build, and reset after it.
    """
    conn = m.session
    try:
        await conn.execute(
            "SELECT pg_catalog.set_config('maintenance_work_mem', $1, false)", m.spec.reindex.maintenance_work_mem
        )
        await conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', $1, false)",
            pg_setting_duration(m.spec.statement_timeout),
        )
        async with index_progress(m, statement):
            await conn.execute(statement)
    finally:
        await conn.execute("RESET maintenance_work_mem; RESET statement_timeout")
