"""Bounded database work: read-only phases under the spec's timeouts, and the converting transaction."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ..api import (
    VectorMigrationSpec,
)
from ..database.catalog import (
    SourceInventory,
)
from ..database.catalog_compare import Comparison
from ..database.sql import run_as_role, set_timeouts
from ..database.surface import TargetSurface, is_the_planned_target
from ..vocabulary import (
    Phase,
    Reason,
    StatementKind,
    TransactionStep,
)
from .context import Migration, PhaseFunction, as_admin
from .outcomes import Advance, Fail, Outcome, Wait
from .plan import Statement, StrategyPlan


async def bounded_reads(m: Migration, what: str, phase: PhaseFunction) -> Outcome:
    """A phase whose every statement waits at most lockTimeout for a lock and runs at most statementTimeout.

    The swap bounds its own transaction; this bounds the phases that only read (or change nothing
    they keep), so a table the application holds locked delays them by lockTimeout, not forever.
    """
    conn = m.session
    await set_timeouts(conn, m.spec.lock_timeout, m.spec.statement_timeout, local=False)
    try:
        return await phase(m)
    except asyncpg.LockNotAvailableError:
        held = await _lock_holders(conn)
        return Wait(
            Reason.LOCK_TIMEOUT,
            f"the {what} waited longer than lockTimeout ({m.spec.lock_timeout}) for a lock"
            + (f": {held}" if held else "")
            + "; nothing changed",
            delay=10.0,
        )
    except asyncpg.QueryCanceledError:
        return Fail(
            Reason.STATEMENT_TIMEOUT,
            f"a statement of the {what} ran longer than statementTimeout ({m.spec.statement_timeout}); nothing changed",
        )
    finally:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("RESET lock_timeout; RESET statement_timeout")


async def _lock_holders(conn: asyncpg.Connection) -> str:
    """Who holds tables locked against reads: relation, application name and backend pid."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT l.relation::pg_catalog.regclass::pg_catalog.text AS relation, a.pid,
               COALESCE(NULLIF(a.application_name, ''), '(no application_name)') AS application
          FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
         WHERE l.granted AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
           AND l.pid <> pg_catalog.pg_backend_pid()
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
         ORDER BY 1, 2
        """
    )
    return ", ".join(f"{r['relation']} held by {r['application']} (pid {r['pid']})" for r in rows)


class DataMismatch(RuntimeError):
    """Checksums differ after the conversion; raised inside the transaction so it rolls back."""


class PlanDrift(RuntimeError):
    """The database no longer matches the plan; raised inside the transaction so it rolls back."""


@dataclass
class Progress:
    """Where a converting transaction got to, for messages and the write-blocking timer."""

    step: StatementKind | TransactionStep = TransactionStep.BEGIN
    subject: str | None = None  # what the step is at, when it is one of several (a table)
    started: float = field(default_factory=time.perf_counter)
    locked_at: float | None = None
    exported_bytes: int = 0
    checksums_read_early: int = 0  # tables whose "before" checksum was read before the lock
    catalog: Comparison | None = None  # the catalog before and after, compared (engine.invariant)
    catalog_before_seconds: float = 0.0  # reading it as the transaction began (before its locks)
    catalog_seconds: float = 0.0  # reading it again and comparing, before the commit (in the window)

    @property
    def where(self) -> str:
        """The step, and what it is at, for messages."""
        return f"{self.step} of {self.subject}" if self.subject else str(self.step)

    @property
    def blocked_seconds(self) -> float:
        """Seconds since the tables were locked (or the transaction began)."""
        return time.perf_counter() - (self.locked_at or self.started)


async def begin_bounded_transaction(m: Migration) -> Any:
    """Start a transaction whose lock waits, statements and index builds are bounded by the spec."""
    conn = m.session
    transaction = conn.transaction()
    await transaction.start()
    try:
        await set_timeouts(conn, m.spec.lock_timeout, m.spec.statement_timeout)
        await conn.execute(
            "SELECT pg_catalog.set_config('maintenance_work_mem', $1, true)", m.spec.reindex.maintenance_work_mem
        )
    except BaseException:
        await roll_back(transaction)
        raise
    return transaction


def transaction_failure(
    error: BaseException, progress: Progress, spec: VectorMigrationSpec, what: str, kept: str = "nothing changed"
) -> Outcome:
    """The outcome of a converting transaction that raised (after it was rolled back); ``kept``: what stays changed."""
    if isinstance(error, asyncpg.LockNotAvailableError):
        return Wait(
            Reason.LOCK_TIMEOUT,
            f"{progress.where}: a table stayed locked by other sessions for longer than lockTimeout "
            f"({spec.lock_timeout}); {kept}, retrying",
            delay=10.0,
        )
    if isinstance(error, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | OSError):
        # A commit whose answer was lost may or may not have happened: the journal will say.
        return Wait(Reason.DATABASE_UNAVAILABLE, f"{progress.where}: connection lost ({error}); will check the journal")
    reason = Reason.ROLLBACK_FAILED if what == "rollback" else Reason.SWAP_FAILED
    if isinstance(error, asyncpg.QueryCanceledError):
        return Fail(
            reason,
            f"{progress.where} exceeded statementTimeout ({spec.statement_timeout}); "
            f"the {what} transaction rolled back, {kept}",
        )
    return Fail(
        reason,
        f"{progress.where} failed ({type(error).__name__}: {error}); the {what} transaction rolled back, {kept}",
    )


@dataclass(frozen=True)
class Ready:
    """What the first change to the database follows: the approved plan and the facts it was made from."""

    plan: StrategyPlan
    inventory: SourceInventory
    surface: TargetSurface


def ready_to_change(m: Migration, what: str) -> Ready | Outcome:
    """The plan the first change to the database follows, or why that change cannot start now.

    Not without a verified backup while one is required (a person must act), and not without a
    plan in this run's memory (plan again first).
    """
    if m.spec.backup.enabled and not (m.status.backup and m.status.backup.verified):
        return Fail(Reason.BACKUP_FAILED, f"no verified backup; {what} never runs without one while backup is enabled")
    facts = m.facts
    if facts.plan is None or facts.inventory is None or facts.surface is None:
        return Advance(Phase.CHECKLIST, f"re-planning before {what}")
    return Ready(facts.plan, facts.inventory, facts.surface)


async def roll_back(transaction: Any) -> None:
    """Roll a transaction back, whatever state its connection is in (it may be gone)."""
    with contextlib.suppress(Exception):
        await transaction.rollback()


async def check_the_target_made(m: Migration, statement: Statement, surface: TargetSurface) -> None:
    """After the plan's CREATE EXTENSION: PlanDrift unless it made the extension the plan was made for."""
    if statement.step is StatementKind.CREATE_TARGET_EXTENSION and not await is_the_planned_target(
        m.session, surface, m.facts.source_library
    ):
        raise PlanDrift("the target extension differs from the one the plan was made for")


async def execute(m: Migration, statement: Statement) -> None:
    """Run one planned statement on the control session: as the role it names, else as the migration.

    An extension statement takes the admin login's privileges when there is one (as_admin).
    """
    if statement.run_as:
        await run_as_role(m.session, statement.run_as, statement.sql)
    elif statement.step in _ADMIN_STEPS:
        async with as_admin(m):
            await m.session.execute(statement.sql)
    else:
        await m.session.execute(statement.sql)


# Statements that run no other role's code and may need more than the application's role has.
_ADMIN_STEPS = frozenset({StatementKind.CREATE_TARGET_EXTENSION, StatementKind.DROP_SOURCE_EXTENSION})
