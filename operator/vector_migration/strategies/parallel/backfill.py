"""Backfill: the existing rows copied into the shadows in keyset batches, then the shadows' indexes built.

Each batch is the plan's statement; its cursor (the last key copied) commits with it, so a restart
continues after the last committed batch. The sync trigger has applied every write since the
prepare, so when the last batch commits the shadow holds every row.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from ...api import ParallelStatus, ShadowTableStatus
from ...database.sql import create_owner_function, is_current_role, qualify
from ...engine import records
from ...engine.context import Migration
from ...engine.outcomes import Advance, Fail, Outcome
from ...engine.transactions import execute
from ...phases.reindex import IndexBuildFailed, analyze, build_index
from ...status import record_parallel, set_condition
from ...vocabulary import ConditionType, Phase, Reason, StatementKind
from .names import table_digest
from .plan import after_backfill, batch_sql
from .recorded import BackfillCursor, BackfillRecord, ShadowTable, backfill_recorded
from .shadow import START_OVER, recorded_shadows


async def run_backfill(m: Migration) -> Outcome:
    """Copy every table's rows in batches, then validate the shadows' foreign keys."""
    conn = m.session
    recorded, tables = await recorded_shadows(m)
    if tables is None:
        return START_OVER
    backfilled = backfill_recorded(recorded)
    cursors = dict(backfilled.tables) if backfilled is not None else {}
    spec = m.spec.parallel
    parallel = m.status.parallel or ParallelStatus()
    progress = {t.name: t for t in parallel.tables}
    for table in tables:
        cursor = cursors.setdefault(table.name, BackfillCursor())
        shown = progress.setdefault(
            table.name, ShadowTableStatus(name=table.name, shadow=f"{table.table_schema}.{table.shadow}")
        )
        statement = await _batch_statement(conn, table)
        while not cursor.done:
            started = time.perf_counter()
            async with conn.transaction():
                row = await conn.fetchrow(statement, cursor.last, spec.batch_size)
                copied = row["rows"]
                if copied:
                    cursor.last = list(row["last"])
                    cursor.copied += copied
                if copied < spec.batch_size:
                    cursor.done = True
                backfill = BackfillRecord(tables=cursors)
                await records.write(conn, m.name, records.BACKFILL, m.status.plan_hash or "", backfill)
            shown.rows_copied = cursor.copied
            m.reporter.progress(f"backfill {table.name}", cursor.copied, shown.rows_total or None)
            if spec.rows_per_second and copied:
                await asyncio.sleep(max(0.0, copied / spec.rows_per_second - (time.perf_counter() - started)))
        shown.backfilled = True
        m.reporter.task_done(f"backfill {table.name}")
        for validate in after_backfill(table):
            if validate.step is StatementKind.VALIDATE_FOREIGN_KEY:
                # NOT VALID while the rows arrived; validating takes no lock that blocks the triggers' writes.
                await execute(m, validate)
    parallel.tables = list(progress.values())
    record_parallel(m.status, parallel)
    total = sum(c.copied for c in cursors.values())
    return Advance(Phase.REINDEX, f"backfilled {total} row(s) into {len(tables)} shadow table(s)")


async def _batch_statement(conn: asyncpg.Connection, table: ShadowTable) -> str:
    """The batch to run: as it is when this role owns the table, else through a function run as the owner.

    Inserting into the shadow evaluates its CHECK constraints and defaults, the table owner's code;
    the owner's SECURITY DEFINER function runs it with the owner's privileges, and PostgreSQL
    refuses SET ROLE inside it (see sql.run_as_role). The function lives in this session's pg_temp,
    seen by no other session and gone with this one; a reconnected run creates it again.
    """
    statement = batch_sql(table)
    owner = table.owner or await conn.fetchval(
        "SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid = $1::pg_catalog.regclass",
        qualify(table.table_schema, table.table),
    )
    if await is_current_role(conn, owner):
        return statement
    function = await create_owner_function(
        conn,
        owner,
        "vector_migration_batch_" + table_digest(table.table_schema, table.table),
        "pg_catalog.text[], pg_catalog.int4",
        "TABLE (copied_rows pg_catalog.int8, last_key pg_catalog.text[])",
        f" #variable_conflict use_column\n BEGIN RETURN QUERY {statement}; END ",
    )
    return f"SELECT copied_rows AS rows, last_key AS last FROM {function}($1, $2)"


async def run_shadow_reindex(m: Migration) -> Outcome:
    """CREATE INDEX CONCURRENTLY on the shadows: the application's writes never wait for a build."""
    _, tables = await recorded_shadows(m)
    if tables is None:
        return START_OVER
    built = 0
    try:
        for table in tables:
            for index in table.vector_indexes:
                built += await build_index(m, table.table_schema, index.name, index.definition)
    except IndexBuildFailed as error:
        return Fail(Reason.REINDEX_FAILED, f"{error} on the shadow; the application's tables are untouched")
    await analyze(m, [(t.table_schema, t.shadow) for t in tables])
    message = f"{built} index(es) built concurrently on the shadow tables; the application never waited"
    set_condition(m.status, ConditionType.INDEXES_REBUILT, True, Reason.COMPLETED, message, m.generation)
    return Advance(Phase.VERIFY, message)
