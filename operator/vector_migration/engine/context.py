"""One migration run: its inputs, what it learned, where it reports, and its database session."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import asyncpg

from ..api import (
    VectorMigrationSpec,
    VectorMigrationStatus,
    duration_ms,
)
from ..database.backup import BackupRuntime, LocalBackup
from ..database.catalog import (
    SourceInventory,
)
from ..database.liveness import Heartbeat, HeartbeatSettings
from ..database.sql import (
    ConnectionParams,
    DatabaseUnavailable,
    connect,
)
from ..database.surface import TargetSurface
from ..database.table_copy import COPY_TEXT
from ..status import warn
from ..vocabulary import (
    ADVISORY_LOCK_KEY,
    ChecksumMode,
    Phase,
    Reason,
)
from .outcomes import Fail, Outcome, Wait
from .plan import ColumnKey, StrategyPlan
from .probe import Probe

if TYPE_CHECKING:
    from .records import IndexBuild


class Reporter(Protocol):
    """Where the engine tells a person what it is doing (a terminal, logs, events)."""

    def phase_started(self, phase: Phase) -> None:
        """A phase begins."""

    def progress(self, task: str, done: int | None = None, total: int | None = None, note: str = "") -> None:
        """A long step advanced; done/total are None when unknown."""

    def task_done(self, task: str) -> None:
        """A long step finished."""

    def warning(self, message: str) -> None:
        """Something a person should know that does not stop the migration."""


class SilentReporter:
    """A reporter that says nothing."""

    def phase_started(self, phase: Phase) -> None:
        """Say nothing."""

    def progress(self, task: str, done: int | None = None, total: int | None = None, note: str = "") -> None:
        """Say nothing."""

    def task_done(self, task: str) -> None:
        """Say nothing."""

    def warning(self, message: str) -> None:
        """Say nothing."""


@dataclass
class RunFacts:
    """What this run learned; after the swap the same facts come from the journal."""

    inventory: SourceInventory | None = None
    surface: TargetSurface | None = None
    plan: StrategyPlan | None = None
    source_library: str | None = None
    checksum_mode: ChecksumMode = ChecksumMode.NORMALIZED
    checksums_under_lock: bool = False  # a checksum read before the swap's lock was not the content's
    copy_format: str = COPY_TEXT  # Rebuild's export format, fixed at the checklist with the plan
    probes: list[Probe] = field(default_factory=list)
    rebuilds: list[IndexBuild] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)  # (schema, table) the swap converted
    replans: int = 0
    failure: Fail | None = None
    swap_loaded: bool = False  # rebuilds and probes hold what the swap recorded
    promotion_used: bool = False  # Decisions.promote released a pause (or accepted latency) this time
    built_again: set[str] = field(default_factory=set)  # indexes verify built a second time in this run
    # The target type of some columns: a rollback's, each column's type before the migration;
    # None takes the spec's rebuild.columnTypes.
    column_types: dict[ColumnKey, str] | None = None

    def chosen_column_types(self, spec: VectorMigrationSpec) -> Mapping[ColumnKey, str]:
        """The target type asked for per column: this run's own, else the spec's."""
        return self.column_types if self.column_types is not None else spec.requested_column_types()


@dataclass(frozen=True)
class RunInputs:
    """What a run is given and never changes: the resource, where its database is, where files go."""

    name: str
    spec: VectorMigrationSpec
    params: ConnectionParams
    backup: BackupRuntime = field(default_factory=lambda: LocalBackup(Path("backups")))
    # Where Rebuild's export files live during its swap transaction (as large as the tables).
    scratch: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    reporter: Reporter = field(default_factory=SilentReporter)
    generation: int | None = None  # the resource's metadata.generation, stamped on conditions
    # The admin login (spec.database.adminSecretRef): the session logs in with it and acts as
    # params.user, taking the admin's own privileges back only for what needs them (as_admin).
    admin_params: ConnectionParams | None = None
    # Replicate's other server (replicate.target): a superuser login there. None: the source's server.
    target_server: ConnectionParams | None = None
    # How the control session's server is watched while a phase waits on it (database.liveness).
    heartbeat: HeartbeatSettings | None = field(default_factory=HeartbeatSettings)


@dataclass(frozen=True)
class Decisions:
    """What a person asked for, as of now; replaced whole when they say something new (an annotation, a flag)."""

    approved_hash: str | None = None
    # Consent to restore the verified backup (its restore_token) when the swap cannot be reversed
    # in SQL: a restore loses every write made since the backup, so it is never automatic.
    restore_consent: str | None = None
    # Undo a succeeded migration (the rollback annotation, or the rollback command).
    rollback: bool = False
    # End the current indefinite cutover pause: used by the step it releases (RunFacts.promotion_used),
    # so a promotion left in place cannot release the next pause too.
    promote: bool = False


@dataclass
class Migration:
    """One migration run: its inputs, what a person decided, what it learned, and the status it writes."""

    inputs: RunInputs
    decisions: Decisions = field(default_factory=Decisions)
    status: VectorMigrationStatus = field(default_factory=VectorMigrationStatus)
    facts: RunFacts = field(default_factory=RunFacts)
    conn: asyncpg.Connection | None = None
    heartbeat: Heartbeat | None = None
    acting_role: str | None = None  # the application's role the admin session acts as
    sessions_opened: int = 0  # a database once reached and then lost is an outage, not a wrong URL

    @property
    def name(self) -> str:
        """The migration's name (namespace/name for the operator): the journal's key."""
        return self.inputs.name

    @property
    def spec(self) -> VectorMigrationSpec:
        """The resource's spec."""
        return self.inputs.spec

    @property
    def params(self) -> ConnectionParams:
        """Where the database is."""
        return self.inputs.params

    @property
    def backup(self) -> BackupRuntime:
        """Where backups are made and restored from."""
        return self.inputs.backup

    @property
    def scratch(self) -> Path:
        """Where the swap transaction may write files."""
        return self.inputs.scratch

    @property
    def reporter(self) -> Reporter:
        """Who hears about progress."""
        return self.inputs.reporter

    @property
    def generation(self) -> int | None:
        """The resource's generation this run serves."""
        return self.inputs.generation

    @property
    def session(self) -> asyncpg.Connection:
        """The control session (holding the migration's advisory lock)."""
        if self.conn is None:
            raise DatabaseUnavailable("no database session")
        return self.conn

    def warn(self, message: str) -> None:
        """A warning for the status (once) and for whoever watches the run."""
        warn(self.status, message)
        self.reporter.warning(message)

    def target_schema(self, inventory: SourceInventory) -> str:
        """Where the target extension goes: the spec's schema, else the source extension's."""
        return self.spec.target.target_schema or inventory.source.schema


def call_timeout(statement_timeout: str) -> float | None:
    """The client's bound on any one call: the server's statementTimeout, and a minute for the answer.

    The server ends a statement at statementTimeout; this bounds the wait for a server that
    cannot say so (the heartbeat notices a silent one much sooner).
    """
    milliseconds = duration_ms(statement_timeout)
    return milliseconds / 1000 + 60.0 if milliseconds else None


async def open_session(m: Migration) -> Outcome | None:
    """Connect and take the per-database migration lock; an Outcome when that is not possible."""
    admin = m.inputs.admin_params
    try:
        m.conn = await connect(admin or m.params, command_timeout=call_timeout(m.spec.statement_timeout))
    except DatabaseUnavailable as error:
        return Wait(Reason.DATABASE_UNAVAILABLE, str(error), delay=5.0)
    if admin is not None:
        acting = await _act_as_application(m.conn, m.params.user)
        if isinstance(acting, Fail):
            await close_session(m)
            return acting
        m.acting_role = acting
    got = await m.conn.fetchval("SELECT pg_catalog.pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY)
    if not got:
        holder = await m.conn.fetchval(
            """
            SELECT pid FROM pg_catalog.pg_locks
             WHERE locktype = 'advisory' AND granted AND database = (
                   SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
               AND ((classid::bigint << 32) | objid::bigint) = $1
            """,
            ADVISORY_LOCK_KEY,
        )
        await close_session(m)
        return Wait(
            Reason.MIGRATION_LOCKED,
            f"another migration is running on database {m.params.dbname or '(default)'} "
            f"(it holds the migration lock, backend pid {holder}); one migration per database at a time",
            delay=30.0,
        )
    m.sessions_opened += 1
    if m.inputs.heartbeat is not None:
        m.heartbeat = await Heartbeat.start(m.params, m.conn, m.inputs.heartbeat)
    return None


async def _act_as_application(conn: asyncpg.Connection, role: str | None) -> str | Fail:
    """SET ROLE to the application's role for the session; the role, or why the admin cannot."""
    if not role:
        return Fail(Reason.INVALID_SPEC, "the application's user must be named when an admin login is given")
    try:
        await conn.execute("SELECT pg_catalog.set_config('role', $1, false)", role)
    except asyncpg.PostgresError as error:
        return Fail(Reason.INSUFFICIENT_PRIVILEGE, f"the admin login cannot act as the application's role: {error}")
    return role


@contextlib.asynccontextmanager
async def as_admin(m: Migration) -> AsyncIterator[None]:
    """The admin login's own privileges for the block, then the application's role again.

    Only for statements that run no other role's code (CREATE/DROP EXTENSION, CREATE/DROP
    DATABASE). Inside a transaction that fails, the role is put back by its rollback.
    """
    if m.acting_role is None:
        yield
        return
    await m.session.execute("RESET ROLE")
    try:
        yield
    finally:
        with contextlib.suppress(asyncpg.InFailedSQLTransactionError):
            await m.session.execute("SELECT pg_catalog.set_config('role', $1, false)", m.acting_role)


async def close_session(m: Migration) -> None:
    """Close the control session (which releases the advisory lock)."""
    if m.heartbeat is not None:
        await m.heartbeat.stop()
        m.heartbeat = None
    if m.conn is not None:
        with contextlib.suppress(Exception):
            await m.conn.close(timeout=5.0)  # a silent server does not get to keep us: asyncpg aborts then
        m.conn = None


PhaseFunction = Callable[[Migration], Awaitable[Outcome]]
