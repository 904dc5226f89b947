"""Approval binds what a Replicate run does: every statement it runs that changes a database is in the hashed plan.

PostgreSQL is the witness: with `log_statement = all`, its log holds every statement each session
ran, named by the session's application_name; the run's own (the engine's sessions, not pg_dump's or
the replication workers') are parsed with pglast, and each that changes something (DDL, a lock, a
database dropped, a sequence set, a session ended) must be one of the plan's statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pglast
from pglast import ast
from pglast.visitors import Visitor

from tests.replication import REPLICATE, session, shop_on
from tests.scenarios import JOURNAL_DDL, manifest, migration, normalized
from vector_migration.database.sql import APPLICATION_NAME
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.runner import run
from vector_migration.strategies.replicate.plan import DROP_SLOT, SET_SEQUENCE
from vector_migration.vocabulary import JOURNAL_SCHEMA, Phase

PREFIX = "vmig-witness "  # log_line_prefix: each logged line of a session starts with it, then its application
# Statements that read, or set only the session's own state
READING = (ast.SelectStmt, ast.TransactionStmt, ast.VariableSetStmt, ast.VariableShowStmt, ast.ExplainStmt)
# Functions that change something beyond the session when a SELECT calls them
CHANGING = {"setval", "nextval", "pg_terminate_backend", "pg_cancel_backend", "pg_create_logical_replication_slot",
            "pg_drop_replication_slot", "pg_replication_origin_advance", "pg_advisory_lock"}  # fmt: skip


class _Calls(Visitor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_FuncCall(self, _ancestors: Any, node: ast.FuncCall) -> None:
        self.names.add(node.funcname[-1].sval)


class _Tables(Visitor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.schemas: set[str | None] = set()

    def visit_RangeVar(self, _ancestors: Any, node: ast.RangeVar) -> None:
        self.schemas.add(node.schemaname)


def changes_something(sql: str) -> bool:
    """Whether the statement changes a database, a role's data or another session (not the engine's journal)."""
    for raw in pglast.parse_sql(sql):
        statement = raw.stmt
        if isinstance(statement, READING):
            calls = _Calls()
            calls(statement)
            if calls.names & CHANGING:
                return True
            continue
        if isinstance(statement, ast.CopyStmt) and not statement.is_from:
            continue  # COPY (SELECT …) TO STDOUT: the checksums read
        tables = _Tables()
        tables(statement)
        if tables.schemas == {JOURNAL_SCHEMA}:  # the engine's bookkeeping, which no plan is about
            continue
        if tables.schemas == {"pg_temp"}:  # the probe's scratch table: the session's own, gone with it
            continue
        return True
    return False


def statements_of(log: str, application: str) -> list[str]:
    """The statements the log says sessions of ``application`` ran, in order."""
    records = [PREFIX + record for record in log.split(PREFIX) if record.strip()]
    found = []
    for record in records:
        head, _, message = record.removeprefix(PREFIX).partition("|")
        if head != application:
            continue
        for marker in ("LOG:  statement: ", "LOG:  execute "):
            if message.startswith(marker):
                text = message.removeprefix(marker)
                if marker == "LOG:  execute ":  # "execute <name>: <sql>"
                    text = text.partition(": ")[2]
                found.append(text.strip())
    return found


@contextlib.asynccontextmanager
async def statement_log(server: EmbeddedPostgres) -> AsyncIterator[Callable[[], list[str]]]:
    """Every statement of every session logged, each line prefixed with its application; what the run's sessions ran."""
    admin = await session(server.params(), "postgres")
    settings = {"log_statement": "all", "log_line_prefix": f"{PREFIX}%a|"}
    for name, value in settings.items():
        await admin.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    await admin.execute("SELECT pg_reload_conf()")
    log, start = await _log_file(server, admin)
    try:
        yield lambda: statements_of(log.read_text(errors="replace")[start:], APPLICATION_NAME)
    finally:
        for name in settings:
            await admin.execute(f"ALTER SYSTEM RESET {name}")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def _log_file(server: EmbeddedPostgres, admin: asyncpg.Connection) -> tuple[Path, int]:
    """The file the server logs to now (pg_ctl -l, which a restart may have changed), and where a mark is in it."""
    mark = f"vmig-witness-mark-{uuid.uuid4()}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await admin.execute(f"SELECT '{mark}'")
        for candidate in server.pgdata.iterdir():
            if (candidate.is_file() and candidate.name in ("log", "restart.log")) or candidate.suffix == ".log":
                text = candidate.read_text(errors="replace")
                if mark in text:
                    return candidate, text.index(mark)
        await asyncio.sleep(0.2)
    raise AssertionError("the server's log file was not found in its data directory")


def planned(document: dict[str, Any]) -> set[str]:
    sections = ("prepare", "afterCopy", "switchover", "afterKeepOldFor")  # a run that does not roll back
    return {normalized(s["sql"]) for section in sections for s in document[section]}  # type: ignore[index]


async def test_a_replicate_run_changes_nothing_its_approved_plan_does_not_say(
    logical_server: EmbeddedPostgres, backup_dir: Path
) -> None:
    shop = await shop_on(logical_server)
    spec = {**REPLICATE, "approval": "Manual", "replicate": {"keepOldFor": "0s", "dropOld": True}}
    held = migration(shop, manifest(**spec), backup_dir)
    waiting = await run(held)
    assert waiting.phase is Phase.AWAITING_APPROVAL, waiting.message
    assert held.facts.plan is not None
    document = held.facts.plan.as_document()

    async with statement_log(logical_server) as ran:
        status = await run(migration(shop, manifest(**spec), backup_dir, approved_hash=waiting.plan_hash),
                           reconnect_for=30)  # fmt: skip
        assert status.phase is Phase.SUCCEEDED, status.message
        # run again once keepOldFor (0s) has passed: the old database stops following and is dropped
        again = await run(migration(shop, manifest(**spec), backup_dir, approved_hash=waiting.plan_hash))
        statements = ran()

    assert again.phase is Phase.SUCCEEDED, again.message
    changing = [normalized(s) for s in statements if changes_something(s)]
    unplanned = [s for s in changing if s not in planned(document) and not s.startswith(JOURNAL_DDL)]
    assert unplanned == [], "\n".join(unplanned)
    # the witness saw what the plan used to leave out: the proof's lock, the sequences set, the
    # channel back taken apart and the old database dropped after keepOldFor
    shown = {
        section: [normalized(s["sql"]) for s in document[section]] for section in ("switchover", "afterKeepOldFor")
    }
    assert [s["step"] for s in document["afterKeepOldFor"]][-1] == "drop-database"
    for sql in (shown["switchover"][0], SET_SEQUENCE, DROP_SLOT, shown["afterKeepOldFor"][-1]):
        assert sql in changing, f"{sql} never ran"
    conn = await asyncpg.connect(host=shop.host, port=shop.port, user=shop.user, database="postgres")
    try:
        assert not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", f"{shop.dbname}_pgvector_old")
    finally:
        await conn.close()
