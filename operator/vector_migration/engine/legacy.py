"""The phase engine: checklist, backup, approval, swap, reindex, verify.

Each phase is a plain async function of the observed world (the database catalog, the
engine's journal in that database, and what this run already learned) that returns an
:data:`Outcome`: advance to the next phase, wait and retry, hold for a person, or fail. The
runner applies outcomes to the status through the named mutations in :mod:`.status`. Nothing
here imports kopf; the operator maps Wait to ``TemporaryError`` and Fail to ``PermanentError``.

Safety rests on three facts:

1. The swap is one transaction. Every statement of the plan, the content checksums before
   and after the conversion, and the journal row saying "swapped" commit together or not at
   all; a checksum mismatch raises inside the transaction, so it never commits.
2. The journal, not the status, says what is done: a re-run after a crash reads it and
   continues after the swap instead of swapping twice.
3. One migration per database: the run holds a session advisory lock from start to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from ..api import (
    SPEC_MUTABLE_AFTER_SWAP,
    BackupStatus,
    ColumnInventory,
    DependentInventory,
    IndexInventory,
    IndexVerification,
    Inventory,
    LatencyMs,
    SettingInventory,
    TableInventory,
    TableVerification,
    VectorMigrationSpec,
    VectorMigrationStatus,
    Verification,
    frozen_spec,
)
from ..database import journal, table_copy
from ..database.backup import BackupError, BackupPending, BackupRequest, BackupRuntime, LocalBackup, RestoreRequest
from ..database.catalog import (
    MIN_SERVER_VERSION_NUM,
    Blocker,
    SourceInventory,
    VectorColumn,
    available_versions,
    default_version,
    read_extension,
    read_inventory,
    read_server,
    untrusted_code,
)
from ..database.measure import (
    BINARY,
    NORMALIZED,
    TEXT,
    IndexMeasurement,
    IndexTarget,
    measure_index,
    prints_identically,
    sample_queries,
    send_function,
    sends_identically,
    table_checksum,
)
from ..database.sql import (
    ConnectionParams,
    DatabaseUnavailable,
    connect,
    qualify,
    quote_ident,
    run_as_role,
    set_timeouts,
)
from ..database.surface import MappingError, TargetSurface, discover, map_type, method_kind, source_library
from ..database.table_copy import COPY_TEXT, copy_format
from ..status import condition, fail, hold, record_timing, set_condition, set_phase, summarize, timing_key, warn
from ..vocabulary import (
    ADVISORY_LOCK_KEY,
    JOURNAL_SCHEMA,
    Approval,
    ConditionType,
    Phase,
    Reason,
    ReindexMode,
    RollbackPolicy,
    Strategy,
)
from .plan import ColumnKey, MigrationPlan, PlanningError, Statement, build_plan, column_key

# ------------------------------------------------------------------------------------ outcomes


@dataclass(frozen=True)
class Advance:
    """Go on to the next phase."""

    phase: Phase
    message: str = ""


@dataclass(frozen=True)
class Wait:
    """A transient condition: retry the same phase after a delay."""

    reason: Reason
    message: str
    delay: float = 5.0


@dataclass(frozen=True)
class Hold:
    """Stop here without failing, until a person acts (approval, dry run)."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class Fail:
    """A terminal failure that needs a person; the message says what to do."""

    reason: Reason
    message: str


Outcome = Advance | Wait | Hold | Fail


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


# ------------------------------------------------------------------------------------- context


@dataclass
class Probe:
    """One index's measurement inputs: where to query after the swap, with which vectors."""

    index: str
    table_rows: int
    after: IndexTarget
    queries: list[str]
    baseline: IndexMeasurement | None


@dataclass
class RunFacts:
    """What this run learned; after the swap the same facts come from the journal."""

    inventory: SourceInventory | None = None
    surface: TargetSurface | None = None
    plan: MigrationPlan | None = None
    source_library: str | None = None
    checksum_mode: str = NORMALIZED
    copy_format: str = COPY_TEXT  # Rebuild's export format, fixed at the checklist with the plan
    probes: list[Probe] = field(default_factory=list)
    rebuilds: list[dict[str, Any]] = field(default_factory=list)
    replans: int = 0
    failure: Fail | None = None
    swap_loaded: bool = False  # rebuilds and probes hold what the swap recorded
    # The target type of some columns: a rollback's, each column's type before the migration;
    # None takes the spec's rebuild.columnTypes.
    column_types: dict[ColumnKey, str] | None = None

    def chosen_column_types(self, spec: VectorMigrationSpec) -> Mapping[ColumnKey, str]:
        """The target type asked for per column: this run's own, else the spec's."""
        return self.column_types if self.column_types is not None else spec.rebuild.requested_types()


@dataclass
class Migration:
    """One migration run: the spec, where the database is, the status being written."""

    name: str
    spec: VectorMigrationSpec
    params: ConnectionParams
    status: VectorMigrationStatus = field(default_factory=VectorMigrationStatus)
    backup: BackupRuntime = field(default_factory=lambda: LocalBackup(Path("backups")))
    # Where Rebuild's export files live during its swap transaction (as large as the tables).
    scratch: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    reporter: Reporter = field(default_factory=SilentReporter)
    approved_hash: str | None = None
    # A person's consent to restore the verified backup (its restore_token), when the swap cannot
    # be reversed in SQL: a restore loses every write made since the backup, so never automatic.
    restore_consent: str | None = None
    # A person asked to undo a succeeded migration (the rollback annotation, or the rollback command).
    rollback_requested: bool = False
    # A person ended the current indefinite cutover pause; consumed by the step it releases, so a
    # promotion left in place cannot release the next pause too.
    promote: bool = False
    promote_consumed: bool = False
    generation: int | None = None
    facts: RunFacts = field(default_factory=RunFacts)
    conn: asyncpg.Connection | None = None

    @property
    def session(self) -> asyncpg.Connection:
        """The control session (holding the migration's advisory lock)."""
        if self.conn is None:
            raise DatabaseUnavailable("no database session")
        return self.conn


# ------------------------------------------------------------------------------------- session


async def open_session(m: Migration) -> Outcome | None:
    """Connect and take the per-database migration lock; an Outcome when that is not possible."""
    try:
        m.conn = await connect(m.params)
    except DatabaseUnavailable as error:
        return Wait(Reason.DATABASE_UNAVAILABLE, str(error), delay=5.0)
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
    return None


async def close_session(m: Migration) -> None:
    """Close the control session (which releases the advisory lock)."""
    if m.conn is not None:
        with contextlib.suppress(Exception):
            await m.conn.close()
        m.conn = None


# ----------------------------------------------------------------------------------- checklist


async def run_checklist(m: Migration) -> Outcome:
    """Read the database, refuse what cannot be migrated, plan, and take the baseline."""
    return await bounded_reads(m, "checklist", _checklist)


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


async def _checklist(m: Migration) -> Outcome:
    conn = m.session
    entries = await journal.read(conn, m.name)
    if journal.VERIFIED in entries:
        m.status = VectorMigrationStatus.model_validate(entries[journal.VERIFIED].detail["status"])
        if m.rollback_requested:
            return Advance(Phase.ROLLING_BACK, "migrated and verified; rolling back as requested")
        return Advance(Phase.SUCCEEDED, await _finished(m))
    if journal.SWAPPED in entries:
        _restore_from_journal(m, entries[journal.SWAPPED])
        return Advance(Phase.REINDEX, "the swap had already committed; continuing with the reindex")
    server = await read_server(conn)
    if server.version_num < MIN_SERVER_VERSION_NUM:
        return Fail(Reason.UNSUPPORTED_SERVER, f"PostgreSQL {server.version} is too old; RuVector needs 14 or newer")
    source = await read_extension(conn, m.spec.source.extension)
    if source is None:
        others = await journal.other_migrations(conn, m.name)
        already = f"; migration(s) {', '.join(others)} already swapped this database" if others else ""
        return Fail(
            Reason.SOURCE_EXTENSION_MISSING,
            f"extension {m.spec.source.extension} is not installed in database {server.database}{already}",
        )
    target = m.spec.target.extension
    versions = await available_versions(conn, target)
    if not versions:
        return Fail(
            Reason.TARGET_EXTENSION_UNAVAILABLE,
            f"extension {target} is not available on this server (not in pg_available_extensions); "
            "install its package on every PostgreSQL instance first",
        )
    if m.spec.target.version and m.spec.target.version not in versions:
        return Fail(
            Reason.TARGET_EXTENSION_UNAVAILABLE,
            f"extension {target} version {m.spec.target.version} is not available "
            f"(available: {', '.join(sorted(versions))})",
        )
    version = m.spec.target.version or await default_version(conn, target) or ""
    needs_superuser, trusted = versions.get(version, (True, False))

    m.reporter.progress("inventory", note="reading the catalog")
    inventory = await read_inventory(conn, m.spec, server, source)
    m.reporter.task_done("inventory")
    if needs_superuser and not trusted and not server.superuser:
        # Reported together with every other problem, so one run lists all a person must fix.
        inventory.blockers.insert(
            0,
            Blocker(
                Reason.INSUFFICIENT_PRIVILEGE,
                f"creating extension {target} needs a superuser (it is not trusted); role {server.user} is not one",
            ),
        )
    for message in inventory.warnings:
        warn(m.status, message)
    if inventory.blockers:
        first = inventory.blockers[0]
        return Fail(first.reason, "; ".join(b.message for b in inventory.blockers))

    target_schema = m.spec.target.target_schema or source.schema
    try:
        surface = await probe_surface(m, inventory, target_schema, server.can_create_database)
    except _ProbeFailed as error:
        return Fail(error.reason, str(error))
    m.facts.copy_format = copy_format(m.facts.checksum_mode)
    try:
        plan = build_plan(
            inventory,
            surface,
            m.spec,
            target_schema=target_schema,
            target_installed=await read_extension(conn, target) is not None,
            copy_format=m.facts.copy_format,
        )
    except PlanningError as error:
        return Fail(error.reason, str(error))
    for message in plan.warnings:
        warn(m.status, message)
    if m.spec.strategy is Strategy.PARALLEL:
        from ..strategies.parallel.legacy import check_tables

        blockers = await check_tables(conn, inventory, surface)
        if blockers:
            return Fail(blockers[0].reason, "; ".join(b.message for b in blockers))
    if m.spec.strategy is Strategy.REBUILD:
        blockers = await table_copy.check_tables(conn, inventory, m.scratch, m.facts.checksum_mode)
        if blockers:
            return Fail(blockers[0].reason, "; ".join(b.message for b in blockers))
    m.facts.inventory, m.facts.surface, m.facts.plan = inventory, surface, plan
    m.status.plan_hash = plan.plan_hash
    m.status.inventory = _inventory_model(inventory, plan, surface)

    m.facts.probes = await _baseline(m, inventory, plan, surface)
    m.status.verification = Verification(
        k=m.spec.verify.k,
        indexes=[
            IndexVerification(
                name=probe.index,
                queries=len(probe.queries),
                recall_before=probe.baseline.recall if probe.baseline else None,
                latency_before=_latency(probe.baseline),
            )
            for probe in m.facts.probes
        ],
    )
    summary = (
        f"{len(inventory.columns)} vector column(s) in {len(inventory.tables())} table(s), "
        f"{len(inventory.indexes)} index(es), {len(inventory.views)} dependent view(s); plan {plan.plan_hash}"
    )
    set_condition(m.status, ConditionType.CHECKLIST_PASSED, True, Reason.PASSED, summary, m.generation)
    if m.spec.dry_run:
        return Hold(Reason.DRY_RUN, f"dry run: checklist passed, nothing changed; {summary}")
    if m.spec.backup.enabled:
        return Advance(Phase.BACKUP, summary)
    set_condition(m.status, ConditionType.BACKUP_COMPLETED, False, Reason.SKIPPED, "backup disabled in spec")
    return Advance(_after_backup(m), summary)


class _ProbeFailed(RuntimeError):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def probe_surface(
    m: Migration, inventory: SourceInventory, target_schema: str, can_create_database: bool
) -> TargetSurface:
    """Learn the target's SQL surface without changing the database.

    Tried first inside a transaction that is always rolled back. When the target's names
    collide with the source's, it cannot be created beside it, so it is created alone in a
    scratch database instead (which needs CREATEDB), then that database is dropped. Either
    way, sampled source values are printed through the target type to learn whether the
    cheap text checksum is valid (see measure.table_checksum).
    """
    conn = m.session
    source = inventory.source
    target = m.spec.target.extension
    library = m.facts.source_library = await source_library(conn, source.oid)
    samples = {c: await _value_samples(conn, c) for c in inventory.columns}
    installed = await read_extension(conn, target)
    if installed is not None:
        surface = await discover(conn, target, library, collides=False)
        await _choose_checksum_mode(m, conn, surface, samples)
        return surface
    create = _create_extension_sql(m.spec, target, target_schema)
    transaction = conn.transaction()
    await transaction.start()
    try:
        if target_schema != source.schema:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(target_schema)}")
        await conn.execute(create)
        surface = await discover(conn, target, library, collides=False)
        await _choose_checksum_mode(m, conn, surface, samples)
        return surface
    except (asyncpg.DuplicateObjectError, asyncpg.DuplicateFunctionError, asyncpg.DuplicateTableError):
        pass  # names collide with the source's: probe alone in a scratch database below
    except asyncpg.PostgresError as error:
        raise _ProbeFailed(Reason.TARGET_EXTENSION_UNAVAILABLE, f"CREATE EXTENSION {target} fails: {error}") from None
    finally:
        await transaction.rollback()
    if not can_create_database:
        raise _ProbeFailed(
            Reason.INSUFFICIENT_PRIVILEGE,
            f"extension {target} uses names that collide with {source.name}'s; planning its conversion needs "
            "CREATEDB to inspect it in a scratch database (grant CREATEDB to the migration role)",
        )
    scratch = _scratch_database_name(inventory.server.database)
    await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)}")
    await conn.execute(f"CREATE DATABASE {quote_ident(scratch)} TEMPLATE template0")
    try:
        probe = await connect(m.params.with_database(scratch))
        try:
            await probe.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(target_schema)}")
            await probe.execute(create)
            surface = await discover(probe, target, library, collides=True)
            await _choose_checksum_mode(m, probe, surface, samples)
            return surface
        except asyncpg.PostgresError as error:
            raise _ProbeFailed(
                Reason.TARGET_EXTENSION_UNAVAILABLE, f"CREATE EXTENSION {target} fails: {error}"
            ) from None
        finally:
            await probe.close()
    finally:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)}")


def _scratch_database_name(database: str) -> str:
    """A deterministic scratch database name (63 bytes at most, whatever the database is called)."""
    import hashlib

    return "vmig_probe_" + hashlib.sha256(database.encode()).hexdigest()[:16]


async def _value_samples(conn: asyncpg.Connection, column: VectorColumn) -> list[tuple[str, bytes]]:
    """Up to 200 values of a column, as printed and as sent by the source type."""
    send = await send_function(conn, qualify(column.type_schema, column.type_name))
    sent = f"{send}({quote_ident(column.column)})" if send else "NULL::pg_catalog.bytea"
    rows = await conn.fetch(
        f"SELECT {quote_ident(column.column)}::pg_catalog.text, {sent} FROM {column.qualified_table} "
        f"WHERE {quote_ident(column.column)} IS NOT NULL LIMIT 200"
    )
    return [(row[0], row[1]) for row in rows]


async def _choose_checksum_mode(
    m: Migration,
    conn: asyncpg.Connection,
    surface: TargetSurface,
    samples: dict[VectorColumn, list[tuple[str, bytes]]],
) -> None:
    """The cheapest checksum the samples show to be valid: binary, else text, else parsed values.

    Binary when the target sends every sampled value exactly as the source did, text when it
    prints them exactly as the source did. A wrong choice cannot pass unnoticed: a checksum
    that differs rolls the swap back, and it is retried once with parsed values.
    """
    binary = True
    requested = m.facts.chosen_column_types(m.spec)
    for column, values in samples.items():
        try:
            target_type = map_type(surface, column, requested.get(column_key(column)))
        except MappingError:
            m.facts.checksum_mode = NORMALIZED
            return  # the planner reports the unmapped column
        type_sql = qualify(target_type.schema, target_type.name)
        async with conn.transaction():
            if not await prints_identically(conn, [text for text, _ in values], type_sql):
                m.facts.checksum_mode = NORMALIZED
                return
            binary = binary and all(sent is not None for _, sent in values)
            binary = binary and await sends_identically(conn, values, type_sql)
    m.facts.checksum_mode = BINARY if binary else TEXT


def _create_extension_sql(spec: VectorMigrationSpec, target: str, schema: str) -> str:
    from ..database.sql import quote_literal

    version = f" VERSION {quote_literal(spec.target.version)}" if spec.target.version else ""
    return f"CREATE EXTENSION {quote_ident(target)}{version} SCHEMA {quote_ident(schema)}"


async def _baseline(
    m: Migration, inventory: SourceInventory, plan: MigrationPlan, surface: TargetSurface
) -> list[Probe]:
    """Recall and latency of every source index on sampled queries: what the target must match."""
    probes = []
    conversions = {(c.column.schema, c.column.table, c.column.column): c for c in plan.conversions}
    for position, rebuild in enumerate(plan.rebuilds, start=1):
        index = rebuild.saved
        conversion = conversions[(index.table_schema, index.table, index.column)]
        column = conversion.column
        rows = inventory.row_counts.get((index.table_schema, index.table), 0)
        if index.ordering_operator is None:
            continue  # not a similarity index: nothing to measure recall of
        before = IndexTarget(
            index_name=index.name,
            schema=index.table_schema,
            table=index.table,
            column=index.column,
            operator_schema=inventory.source.schema,
            operator=index.ordering_operator,
            type_sql=qualify(column.type_schema, column.type_name),
            predicate=index.predicate,
        )
        after = IndexTarget(
            index_name=index.name,
            schema=index.table_schema,
            table=index.table,
            column=index.column,
            operator_schema=surface.schema,
            operator=rebuild.opclass.ordering_operator or index.ordering_operator,
            type_sql=qualify(surface.schema, conversion.target_type.name),
            predicate=index.predicate,
        )
        m.reporter.progress("baseline", position - 1, len(plan.rebuilds), f"measuring {index.name}")
        untrusted = await untrusted_code(m.session, index.oid) if index.predicate else []
        if untrusted:
            # Sampling evaluates the predicate with this session's privileges: another role's code
            # there could use them (a table owner could make itself superuser). Not measured.
            _warn(m, f"index {index.name} is not measured: its predicate calls {', '.join(untrusted)}")
            rows = 0
        queries = await sample_queries(m.session, before, m.spec.verify.sample_queries, rows) if rows else []
        baseline = await measure_index(m.session, before, queries, m.spec.verify.k) if queries else None
        probes.append(Probe(index.name, rows, after, queries, baseline))
    m.reporter.task_done("baseline")
    return probes


async def _finished(m: Migration) -> str:
    """A finished migration run again: nothing to do, except a Parallel one's old tables once due."""
    if m.spec.strategy is Strategy.PARALLEL:
        from ..strategies.parallel.legacy import drop_old_tables, seconds_until_old_tables_go

        remaining = seconds_until_old_tables_go(m.status)
        if remaining == 0:
            return await drop_old_tables(m)
        if remaining is not None:
            return f"migrated and verified; the old tables stay for {remaining:.0f}s more (parallel.keepOldFor)"
    return "already migrated and verified; nothing to do"


def _after_backup(m: Migration) -> Phase:
    return Phase.AWAITING_APPROVAL if m.spec.approval is Approval.MANUAL else Phase.SWAP


# -------------------------------------------------------------------------------------- backup


async def run_backup_phase(m: Migration) -> Outcome:
    """Dump the database and check the archive before anything changes."""
    inventory = m.facts.inventory
    if inventory is None:
        return Advance(Phase.CHECKLIST, "re-reading the database before the backup")
    request = BackupRequest(
        migration=m.name,
        archive_name=_safe_file_name(
            f"{inventory.server.database}-{m.name}-{(m.status.plan_hash or 'plan')[7:15]}.dump"
        ),
        scope=m.spec.backup.scope,
        tables=inventory.tables(),
        server_major=inventory.server.version_num // 10000,
        plan_hash=m.status.plan_hash or "",
        database_bytes=inventory.server.database_bytes,
    )
    m.reporter.progress("backup", note=f"pg_dump {m.spec.backup.scope.value}")
    try:
        result = await m.backup.backup(m.params, request)
    except BackupPending as pending:
        return Wait(Reason.IN_PROGRESS, str(pending), delay=5.0)
    except BackupError as error:
        set_condition(m.status, ConditionType.BACKUP_COMPLETED, False, Reason.BACKUP_FAILED, str(error))
        return Fail(Reason.BACKUP_FAILED, f"backup failed, nothing was changed: {error}")
    finally:
        m.reporter.task_done("backup")
    m.status.backup = BackupStatus(
        location=result.location, size_bytes=result.size_bytes, sha256=result.sha256, verified=True
    )
    message = f"{result.location} ({result.size_bytes} bytes, sha256 {result.sha256[:12]}…), archive checked"
    set_condition(m.status, ConditionType.BACKUP_COMPLETED, True, Reason.COMPLETED, message, m.generation)
    return Advance(_after_backup(m), message)


def _safe_file_name(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)


async def run_awaiting_approval(m: Migration) -> Outcome:
    """Proceed only when the approved hash is the current plan's."""
    current = m.status.plan_hash
    if m.approved_hash is None:
        return Hold(Reason.AWAITING_APPROVAL, f"approval is Manual: review the plan and approve hash {current}")
    if m.approved_hash != current:
        return Hold(
            Reason.AWAITING_APPROVAL,
            f"the approved hash {m.approved_hash} is stale (the plan is now {current}); review and approve again",
        )
    return Advance(Phase.SWAP, f"plan {current} approved")


# ---------------------------------------------------------------------------------------- swap


class _DataMismatch(RuntimeError):
    """Checksums differ after the conversion; raised inside the transaction so it rolls back."""


class _PlanDrift(RuntimeError):
    """The database no longer matches the plan; raised inside the transaction so it rolls back."""


@dataclass
class _Progress:
    """Where a converting transaction got to, for messages and the write-blocking timer."""

    step: str = "begin"
    started: float = field(default_factory=time.perf_counter)
    locked_at: float | None = None
    exported_bytes: int = 0

    @property
    def blocked_seconds(self) -> float:
        return time.perf_counter() - (self.locked_at or self.started)


async def _convert(
    m: Migration,
    statements: list[Statement],
    inventory: SourceInventory,
    surface: TargetSurface,
    mode: str,
    progress: _Progress,
    exports: Path | None = None,
) -> list[TableVerification]:
    """Run a plan's statements inside the caller's transaction, checksumming every table under the lock.

    Raises _DataMismatch when any table's rows or content differ after the conversion, so the
    caller's transaction rolls back instead of committing a lossy change.
    """
    conn = m.session
    before: dict[tuple[str, str], Any] = {}
    for number, statement in enumerate(statements, start=1):
        progress.step = statement.step
        m.reporter.progress("swap", number - 1, len(statements), statement.step)
        building = statement.step in ("build-index", "restore-index")
        if statement.step in ("export", "import"):
            await _copy(m, statement, exports, progress)
            continue
        async with _index_progress(m, statement.sql if building else None):
            if statement.run_as:
                await run_as_role(conn, statement.run_as, statement.sql)
            else:
                await conn.execute(statement.sql)
        if statement.step == "create-target-extension":
            real = await discover(conn, surface.extension, m.facts.source_library, collides=surface.collides)
            if real.summary() != surface.summary():
                raise _PlanDrift("the target extension differs from the one the plan was made for")
        if statement.step == "lock":
            progress.locked_at = time.perf_counter()
            progress.step = "checksum-before"
            for schema, table in inventory.tables():
                names = {c.column for c in inventory.columns_of(schema, table)}
                before[(schema, table)] = await table_checksum(conn, schema, table, names, mode)
    progress.step = "checksum-after"
    tables = []
    for schema, table in inventory.tables():
        names = {c.column for c in inventory.columns_of(schema, table)}
        after = await table_checksum(conn, schema, table, names, mode)
        was = before[(schema, table)]
        tables.append(
            TableVerification(
                name=f"{schema}.{table}",
                rows_before=was.rows,
                rows_after=after.rows,
                checksum_before=was.checksum,
                checksum_after=after.checksum,
            )
        )
        if (after.rows, after.checksum) != (was.rows, was.checksum):
            raise _DataMismatch(
                f"{schema}.{table}: {was.rows} rows/{was.checksum} before, {after.rows} rows/{after.checksum} after"
            )
    return tables


async def _copy(m: Migration, statement: Statement, exports: Path | None, progress: _Progress) -> None:
    """One Rebuild COPY step: the table named in the plan's statement, out to or in from its file."""
    if exports is None or statement.table is None:
        raise _PlanDrift("the plan copies tables but this run has no export area")
    schema, table = statement.table
    fmt = m.facts.copy_format
    if statement.step == "export":
        size = await table_copy.export_table(m.session, exports, schema, table, fmt)
        progress.exported_bytes += size
    else:
        await table_copy.import_table(m.session, exports, schema, table, fmt, statement.run_as)


async def _begin_bounded_transaction(m: Migration) -> Any:
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
        await _rollback(transaction)
        raise
    return transaction


def _transaction_failure(error: BaseException, progress: _Progress, spec: VectorMigrationSpec, what: str) -> Outcome:
    """The outcome of a converting transaction that raised (after it was rolled back)."""
    if isinstance(error, asyncpg.LockNotAvailableError):
        return Wait(
            Reason.LOCK_TIMEOUT,
            f"{progress.step}: a table stayed locked by other sessions for longer than lockTimeout "
            f"({spec.lock_timeout}); nothing changed, retrying",
            delay=10.0,
        )
    if isinstance(error, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | OSError):
        # A commit whose answer was lost may or may not have happened: the journal will say.
        return Wait(Reason.DATABASE_UNAVAILABLE, f"{progress.step}: connection lost ({error}); will check the journal")
    reason = Reason.ROLLBACK_FAILED if what == "rollback" else Reason.SWAP_FAILED
    if isinstance(error, asyncpg.QueryCanceledError):
        return Fail(
            reason,
            f"{progress.step} exceeded statementTimeout ({spec.statement_timeout}); "
            f"the {what} transaction rolled back, nothing changed",
        )
    return Fail(
        reason,
        f"{progress.step} failed ({type(error).__name__}: {error}); "
        f"the {what} transaction rolled back, nothing changed",
    )


def ready_to_change(m: Migration, what: str) -> Outcome | tuple[MigrationPlan, SourceInventory, TargetSurface]:
    """The plan the first change to the database follows, or why that change cannot start now.

    Not without a verified backup while one is required (a person must act), and not without a
    plan in this run's memory (plan again first).
    """
    if m.spec.backup.enabled and not (m.status.backup and m.status.backup.verified):
        return Fail(Reason.BACKUP_FAILED, f"no verified backup; {what} never runs without one while backup is enabled")
    facts = m.facts
    if facts.plan is None or facts.inventory is None or facts.surface is None:
        return Advance(Phase.CHECKLIST, f"re-planning before {what}")
    return facts.plan, facts.inventory, facts.surface


async def run_swap(m: Migration) -> Outcome:
    """Convert every column and swap the extension in one transaction, proven by checksums."""
    conn = m.session
    entries = await journal.read(conn, m.name)
    if journal.VERIFIED in entries:
        m.status = VectorMigrationStatus.model_validate(entries[journal.VERIFIED].detail["status"])
        return Advance(Phase.SUCCEEDED, "already migrated and verified; nothing to do")
    if journal.SWAPPED in entries:
        _restore_from_journal(m, entries[journal.SWAPPED])
        return Advance(Phase.REINDEX, "the swap had already committed")
    ready = ready_to_change(m, "the swap")
    if not isinstance(ready, tuple):
        return ready
    plan, inventory, surface = ready
    facts = m.facts

    rebuilding = m.spec.strategy is Strategy.REBUILD
    progress = _Progress()
    transaction = await _begin_bounded_transaction(m)
    try:
        progress.step = "re-plan"
        fresh = await read_inventory(conn, m.spec, inventory.server, inventory.source, count_rows=False)
        replanned = build_plan(
            fresh,
            surface,
            m.spec,
            target_schema=_target_schema(m, inventory),
            target_installed=await read_extension(conn, surface.extension) is not None,
            copy_format=facts.copy_format,
        )
        if fresh.blockers or replanned.plan_hash != m.status.plan_hash:
            raise _PlanDrift(f"the database changed since the checklist (plan {replanned.plan_hash})")
        with table_copy.export_area(m.scratch, m.name) if rebuilding else contextlib.nullcontext() as exports:
            tables = await _convert(m, list(plan.swap), inventory, surface, facts.checksum_mode, progress, exports)
        verification = m.status.verification or Verification(k=m.spec.verify.k)
        verification.tables = tables
        verification.checksum_mode = facts.checksum_mode
        m.status.verification = verification
        record_timing(m.status, "writeBlockedSeconds", progress.blocked_seconds)
        progress.step = "journal"
        facts.rebuilds = [_rebuild_record(r) for r in plan.rebuilds]
        facts.swap_loaded = True
        await journal.record(conn, m.name, journal.SWAPPED, plan.plan_hash, _journal_detail(m))
        progress.step = "commit"
        await transaction.commit()
    except _PlanDrift as error:
        await _rollback(transaction)
        facts.replans += 1
        if facts.replans > 2:
            return Fail(Reason.PLAN_CHANGED, f"{error}; the plan keeps changing, nothing was changed")
        facts.plan = None
        return Advance(Phase.CHECKLIST, f"{error}; nothing changed, re-planning")
    except _DataMismatch as error:
        await _rollback(transaction)
        if facts.checksum_mode in (BINARY, TEXT):
            # The target sent or printed some value differently from the sample: compare parsed values.
            cheap, facts.checksum_mode = facts.checksum_mode, NORMALIZED
            return Advance(Phase.SWAP, f"{cheap} checksums differ ({error}); retrying with value checksums")
        return Fail(Reason.DATA_MISMATCH, f"content changed during conversion ({error}); the swap rolled back")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await _rollback(transaction)
        return _transaction_failure(error, progress, m.spec, "swap")
    m.reporter.task_done("swap")
    message = (
        f"{inventory.source.name} → {surface.extension} ({plan.route} route); "
        f"writes blocked {m.status.timings['writeBlockedSeconds']:.2f}s; checksums equal"
        + (f"; {progress.exported_bytes} bytes exported and imported ({facts.copy_format} COPY)" if rebuilding else "")
    )
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, True, Reason.COMPLETED, message, m.generation)
    return Advance(Phase.REINDEX, message)


def _target_schema(m: Migration, inventory: SourceInventory) -> str:
    return m.spec.target.target_schema or inventory.source.schema


async def _rollback(transaction: Any) -> None:
    with contextlib.suppress(Exception):
        await transaction.rollback()


def _rebuild_record(rebuild: Any) -> dict[str, Any]:
    return {
        "schema": rebuild.saved.schema,
        "name": rebuild.saved.name,
        "table": f"{rebuild.saved.table_schema}.{rebuild.saved.table}",
        "method": rebuild.method,
        "definition": rebuild.definition,
        "concurrent": rebuild.concurrent,
    }


def _vector_tables(columns: list[VectorColumn]) -> list[list[Any]]:
    tables: dict[tuple[str, str], list[str]] = {}
    for column in columns:
        tables.setdefault((column.schema, column.table), []).append(column.column)
    return [[schema, table, sorted(names)] for (schema, table), names in sorted(tables.items())]


def _journal_detail(m: Migration) -> dict[str, Any]:
    inventory = m.facts.inventory
    source = inventory.source if inventory else None
    return {
        "source": {"extension": source.name, "version": source.version, "schema": source.schema} if source else None,
        "checksumMode": m.facts.checksum_mode,
        "spec": frozen_spec(m.spec),
        # the vector tables by (schema, table, columns): display names like "a.b.c" are ambiguous
        "tables": _vector_tables(inventory.columns if inventory else []),
        "status": m.status.model_dump(by_alias=True, mode="json"),
        "rebuilds": m.facts.rebuilds,
        "probes": [
            {
                "index": p.index,
                "tableRows": p.table_rows,
                "after": asdict(p.after),
                "queries": p.queries,
                "baseline": asdict(p.baseline) if p.baseline else None,
            }
            for p in m.facts.probes
        ],
    }


def _measurement(recorded: dict[str, Any]) -> IndexMeasurement:
    truth = recorded.get("truth")
    return IndexMeasurement(**{**recorded, "truth": tuple(tuple(pair) for pair in truth) if truth else None})


def _restore_from_journal(m: Migration, entry: journal.JournalEntry) -> None:
    """Take the facts recorded with the swap: what to rebuild, what to measure, what was before."""
    saved = VectorMigrationStatus.model_validate(entry.detail["status"])
    m.status.plan_hash = entry.plan_hash
    m.status.inventory = saved.inventory
    m.status.backup = m.status.backup or saved.backup
    m.status.verification = saved.verification
    for key, value in saved.timings.items():
        m.status.timings.setdefault(key, value)
    for message in saved.warnings:
        warn(m.status, message)
    m.facts.rebuilds = list(entry.detail["rebuilds"])
    m.facts.checksum_mode = entry.detail.get("checksumMode") or NORMALIZED  # what the samples proved valid
    m.facts.swap_loaded = True
    m.facts.probes = [
        Probe(
            index=p["index"],
            table_rows=p["tableRows"],
            after=IndexTarget(**p["after"]),
            queries=list(p["queries"]),
            baseline=_measurement(p["baseline"]) if p["baseline"] else None,
        )
        for p in entry.detail["probes"]
    ]
    for kind in (ConditionType.CHECKLIST_PASSED, ConditionType.EXTENSION_SWAPPED):
        set_condition(m.status, kind, True, Reason.ALREADY_DONE, "recorded in the migration journal", m.generation)


# ------------------------------------------------------------------------------------- reindex


@contextlib.asynccontextmanager
async def _index_progress(m: Migration, statement: str | None) -> AsyncIterator[None]:
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


async def _swap_facts(m: Migration) -> Outcome | None:
    """Make sure the facts recorded with the swap are loaded; an Outcome when they cannot be.

    A run that starts in Reindex or Verify (an operator restarted, a status read back) has an
    empty memory: without this, there would be nothing to rebuild and nothing to measure, and
    verification would pass vacuously.
    """
    if m.facts.swap_loaded:
        return None
    entries = await journal.read(m.session, m.name)
    if journal.VERIFIED in entries:
        m.status = VectorMigrationStatus.model_validate(entries[journal.VERIFIED].detail["status"])
        return Advance(Phase.SUCCEEDED, "already migrated and verified; nothing to do")
    if journal.SWAPPED not in entries:
        return Advance(Phase.CHECKLIST, "no committed swap is recorded; starting from the checklist")
    swapped_with = entries[journal.SWAPPED].detail.get("spec")
    if swapped_with is not None and swapped_with != frozen_spec(m.spec):
        now = frozen_spec(m.spec)
        changed = sorted(key for key in now.keys() | swapped_with.keys() if now.get(key) != swapped_with.get(key))
        return Fail(
            Reason.SPEC_CHANGED_AFTER_SWAP,
            f"spec.{', spec.'.join(changed)} changed after the swap committed; only "
            f"{', '.join(sorted(SPEC_MUTABLE_AFTER_SWAP))} may change now. Restore the previous values to continue.",
        )
    _restore_from_journal(m, entries[journal.SWAPPED])
    return None


async def run_reindex(m: Migration) -> Outcome:
    """Build every index the swap left for after the commit; repair INVALID leftovers."""
    conn = m.session
    missing = await _swap_facts(m)
    if missing is not None:
        return missing
    built = 0
    for rebuild in m.facts.rebuilds:
        result = await build_index(m, rebuild["schema"], rebuild["name"], rebuild["definition"], rebuild["method"])
        if isinstance(result, Fail):
            return Fail(result.reason, f"{result.message}; the data is migrated and intact, the index is not")
        built += result
    total = len(m.facts.rebuilds)
    message = f"{total} index(es) on the target access methods ({built} built after the swap)"
    set_condition(m.status, ConditionType.INDEXES_REBUILT, True, Reason.COMPLETED, message, m.generation)
    await journal.record(conn, m.name, journal.REINDEXED, m.status.plan_hash or "", {"built": built})
    return Advance(Phase.VERIFY, message)


async def build_index(m: Migration, schema: str, name: str, definition: str, method: str | None = None) -> Fail | bool:
    """Build one index outside the swap transaction: whether it was built now (False: a valid one was there).

    An INVALID index (what an interrupted CREATE INDEX CONCURRENTLY leaves) or one on another
    access method is dropped and built again; each build is bounded by statementTimeout and gets
    three attempts, after which the Fail says why.
    """
    conn = m.session
    state = await _index_state(conn, schema, name)
    if state is not None and state[0] and (method is None or state[1] == method):
        return False
    attempts = 0
    while True:
        attempts += 1
        if state is not None:
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualify(schema, name)}")
        try:
            await conn.execute(
                "SELECT pg_catalog.set_config('maintenance_work_mem', $1, false)", m.spec.reindex.maintenance_work_mem
            )
            await conn.execute("SELECT pg_catalog.set_config('statement_timeout', $1, false)", m.spec.statement_timeout)
            async with _index_progress(m, definition):
                await conn.execute(definition)
            return True
        except asyncpg.PostgresError as error:
            state = await _index_state(conn, schema, name)
            if attempts >= 3:
                set_condition(m.status, ConditionType.INDEXES_REBUILT, False, Reason.REINDEX_FAILED, str(error))
                return Fail(Reason.REINDEX_FAILED, f"building index {name} failed {attempts} times ({error})")
            m.reporter.warning(f"building {name} failed ({error}); retrying")
        finally:
            await conn.execute("RESET maintenance_work_mem; RESET statement_timeout")


async def _index_state(conn: asyncpg.Connection, schema: str, name: str) -> tuple[bool, str] | None:
    row = await conn.fetchrow(
        """
        SELECT i.indisvalid, am.amname FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
          JOIN pg_catalog.pg_am am ON am.oid = c.relam
         WHERE n.nspname = $1 AND c.relname = $2
        """,
        schema,
        name,
    )
    return None if row is None else (row["indisvalid"], row["amname"])


# -------------------------------------------------------------------------------------- verify


async def run_verify(m: Migration) -> Outcome:
    """Prove the result: data equal, source gone, indexes valid and used, recall and latency held."""
    return await bounded_reads(m, "verification", _verify)


async def _verify(m: Migration) -> Outcome:
    conn = m.session
    missing = await _swap_facts(m)
    if missing is not None:
        return missing
    spec = m.spec.verify
    problems: list[tuple[Reason, str]] = []
    verification = m.status.verification or Verification(k=spec.k)
    for table in verification.tables:
        if (table.rows_after, table.checksum_after) != (table.rows_before, table.checksum_before):
            problems.append((Reason.DATA_MISMATCH, f"{table.name}: content differs from before the swap"))
    if await read_extension(conn, m.spec.source.extension) is not None:
        problems.append((Reason.VERIFICATION_FAILED, f"extension {m.spec.source.extension} is still installed"))
    for rebuild in m.facts.rebuilds:
        state = await _index_state(conn, rebuild["schema"], rebuild["name"])
        if state is None or not state[0] or state[1] != rebuild["method"]:
            problems.append(
                (
                    Reason.VERIFICATION_FAILED,
                    f"index {rebuild['name']} is missing, INVALID or not on {rebuild['method']}",
                )
            )
    problems += await _judge_probes(m, m.facts.probes, verification)
    verification.passed = not problems
    m.status.verification = verification
    if problems:
        message = "; ".join(text for _, text in problems)
        set_condition(m.status, ConditionType.VERIFIED, False, problems[0][0], message, m.generation)
        backup = f" The pre-migration backup is {m.status.backup.location}." if m.status.backup else ""
        return Fail(problems[0][0], f"verification failed: {message}.{backup}")
    await _post_migration(m)
    recalls = [v.recall_after for v in verification.indexes if v.recall_after is not None]
    message = (
        f"{sum(t.rows_after or 0 for t in verification.tables)} rows in {len(verification.tables)} table(s) equal "
        f"before and after; {len(m.facts.rebuilds)} index(es) valid"
        + (f"; lowest recall@{spec.k} {min(recalls):.3f}" if recalls else "")
    )
    set_condition(m.status, ConditionType.VERIFIED, True, Reason.PASSED, message, m.generation)
    await record_success(m, message)
    return Advance(Phase.SUCCEEDED, message)


async def record_success(m: Migration, message: str) -> None:
    """Journal the succeeded status before the status says so: a re-run finds it and does nothing."""
    final = m.status.model_copy(deep=True)
    set_phase(final, Phase.SUCCEEDED, message, m.generation)
    await journal.record(
        m.session,
        m.name,
        journal.VERIFIED,
        m.status.plan_hash or "",
        {"status": final.model_dump(by_alias=True, mode="json")},
    )


async def _judge_probes(m: Migration, probes: list[Probe], verification: Verification) -> list[tuple[Reason, str]]:
    """Measure each probe's index now; what fell below the baseline's recall or above its latency bound."""
    conn = m.session
    spec = m.spec.verify
    problems: list[tuple[Reason, str]] = []
    by_name = {v.name: v for v in verification.indexes}
    for position, probe in enumerate(probes):
        m.reporter.progress("verify", position, len(probes), f"measuring {probe.index}")
        if not probe.queries:
            continue
        truth = probe.baseline.truth if probe.baseline else None
        after = await measure_index(conn, probe.after, probe.queries, spec.k, truth)
        entry = by_name.setdefault(probe.index, IndexVerification(name=probe.index, queries=len(probe.queries)))
        entry.recall_after = after.recall
        entry.latency_after = _latency(after)
        entry.used_by_planner = after.used_by_planner
        if not after.usable:
            problems.append((Reason.VERIFICATION_FAILED, f"index {probe.index} cannot serve its distance query"))
        before = probe.baseline
        baseline_recall = before.recall if before is not None else None
        if (
            after.recall is not None
            and baseline_recall is not None
            and (after.recall < baseline_recall - spec.max_recall_drop)
        ):
            problems.append(
                (
                    Reason.RECALL_DROPPED,
                    f"index {probe.index}: recall@{spec.k} {after.recall:.3f} is more than "
                    f"{spec.max_recall_drop} below the baseline {baseline_recall:.3f}",
                )
            )
        if after.recall is not None and spec.min_recall is not None and after.recall < spec.min_recall:
            problems.append(
                (Reason.RECALL_DROPPED, f"index {probe.index}: recall@{spec.k} {after.recall:.3f} < {spec.min_recall}")
            )
        if before is not None:
            label, baseline_ms = before.judged_percentile
            after_ms = after.judged_percentile[1]
            bound = baseline_ms * spec.max_latency_regression + spec.latency_slack_ms
            if after_ms > bound:
                problems.append(
                    (
                        Reason.LATENCY_REGRESSED,
                        f"index {probe.index}: {label} {after_ms:.2f} ms exceeds {bound:.2f} ms "
                        f"({spec.max_latency_regression}x baseline {baseline_ms:.2f} ms + {spec.latency_slack_ms} ms)",
                    )
                )
    verification.indexes = list(by_name.values())
    m.reporter.task_done("verify")
    return problems


METRICS = {"<->": "l2", "<=>": "cosine", "<#>": "ip", "<+>": "l1"}


async def _post_migration(m: Migration) -> None:
    """RuVector-only features, applied only when the target extension owns their functions.

    Optional by nature: a missing function or a failing call is a warning, never a failure of a
    migration whose data is already verified.
    """
    post = m.spec.post_migration
    wanted: list[str] = []
    if post.register_collections or post.tiers is not None or post.integrity_policy is not None:
        wanted.append("ruvector_register_collection")
    if post.tiers is not None:
        wanted.append("ruvector_set_tiers")
    if post.integrity_policy is not None:
        wanted.append("ruvector_integrity_policy_set")
    if not wanted:
        return
    rows = await m.session.fetch(
        """
        SELECT p.proname, n.nspname FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND d.deptype = 'e'
         WHERE e.extname = $1 AND p.proname = ANY($2::text[])
        """,
        m.spec.target.extension,
        wanted,
    )
    functions = {row["proname"]: qualify(row["nspname"], row["proname"]) for row in rows}
    for name in wanted:
        if name not in functions:
            _warn(m, f"postMigration: target {m.spec.target.extension} has no {name}(); skipped")
    if "ruvector_register_collection" not in functions:
        return
    dims = {
        (table.name, column.name): column.dims
        for table in (m.status.inventory.tables if m.status.inventory else [])
        for column in table.columns
    }
    # One collection per column; its metric comes from the index RuVector's search would use:
    # a whole-table HNSW index first, then any other, by name.
    methods = {r["name"]: r["method"] for r in m.facts.rebuilds}

    def preference(probe: Probe) -> tuple[bool, bool, str]:
        kind = method_kind(methods.get(probe.index, ""))
        return probe.after.predicate is not None, kind != "hnsw", probe.index

    seen: set[tuple[str, str, str]] = set()
    for probe in sorted(m.facts.probes, key=preference):
        key = (probe.after.schema, probe.after.table, probe.after.column)
        if key in seen:
            continue
        seen.add(key)
        collection = f"{probe.after.table}_{probe.after.column}"[:63]
        calls: list[tuple[str, str, tuple[Any, ...]]] = [
            (
                "ruvector_register_collection",
                "$1, $2, $3, $4, $5, $6",
                (
                    collection,
                    probe.after.schema,
                    probe.after.table,
                    probe.after.column,
                    dims.get((f"{probe.after.schema}.{probe.after.table}", probe.after.column)),
                    METRICS.get(probe.after.operator, "l2"),
                ),
            )
        ]
        if post.tiers is not None and "ruvector_set_tiers" in functions:
            tiers = post.tiers
            calls.append(("ruvector_set_tiers", "$1, $2, $3, $4", (collection, *_tier_hours(tiers))))
        if post.integrity_policy is not None and "ruvector_integrity_policy_set" in functions:
            policy = json.dumps(post.integrity_policy)
            calls.append(
                ("ruvector_integrity_policy_set", "$1, $2, $3::pg_catalog.jsonb", (collection, "default", policy))
            )
        for function, placeholders, arguments in calls:
            try:
                async with m.session.transaction():
                    await m.session.execute(f"SELECT {functions[function]}({placeholders})", *arguments)
            except asyncpg.PostgresError as error:
                _warn(m, f"postMigration: {function}({collection}) failed: {error}")


def _tier_hours(tiers: Any) -> tuple[int, int, int]:
    return tiers.hot_hours, tiers.warm_hours, tiers.cold_hours


def _warn(m: Migration, message: str) -> None:
    warn(m.status, message)
    m.reporter.warning(message)


def _latency(measurement: IndexMeasurement | None) -> LatencyMs | None:
    if measurement is None:
        return None
    return LatencyMs(p50=measurement.p50_ms, p95=measurement.p95_ms, p99=measurement.p99_ms)


def _inventory_model(inventory: SourceInventory, plan: MigrationPlan, surface: TargetSurface) -> Inventory:
    conversions = {(c.column.schema, c.column.table, c.column.column): c for c in plan.conversions}
    rebuilds = {(r.saved.schema, r.saved.name): r for r in plan.rebuilds}
    return Inventory(
        server_version=inventory.server.version,
        source_version=inventory.source.version,
        target_version=surface.version,
        tables=[
            TableInventory(
                name=f"{schema}.{table}",
                rows=inventory.row_counts.get((schema, table), 0),
                columns=[
                    ColumnInventory(
                        name=c.column,
                        type=c.type_name,
                        dims=c.dims,
                        target_type=conversions[(c.schema, c.table, c.column)].target_type_sql,
                    )
                    for c in inventory.columns_of(schema, table)
                ],
            )
            for schema, table in inventory.tables()
        ],
        indexes=[
            IndexInventory(
                name=i.name,
                table=f"{i.table_schema}.{i.table}",
                column=i.column,
                method=i.method,
                opclass=i.opclass,
                definition=i.definition,
                target_definition=rebuilds[(i.schema, i.name)].definition,
            )
            for i in inventory.indexes
        ],
        dependents=[DependentInventory(kind=d.kind, name=d.name, handling=d.handling) for d in inventory.dependents],
        settings=[
            SettingInventory(scope=c.saved.scope, name=c.saved.name, value=c.saved.value, target_name=c.target_name)
            for c in plan.settings
        ],
    )


# ------------------------------------------------------------------------------------ rollback


async def run_rollback(m: Migration) -> Outcome:
    """Undo a committed swap: in SQL when possible, else (with a person's consent) from the backup.

    The SQL way runs the same proven conversion from the target back to the source. When that
    cannot be done, the verified backup can be restored, replacing every object in the archive
    with its content at backup time: that loses the writes made since, so it waits for a person
    to consent to that exact archive (its restore token).
    """
    conn = m.session
    entries = await journal.read(conn, m.name)
    if journal.SWAPPED not in entries:
        return Fail(Reason.NOTHING_TO_ROLL_BACK, "nothing to roll back: no committed swap is recorded")
    swapped = entries[journal.SWAPPED]
    saved = VectorMigrationStatus.model_validate(swapped.detail["status"])
    backup = saved.backup if saved.backup and saved.backup.verified else m.status.backup
    if backup is not None and backup.verified and m.restore_consent == restore_token(backup):
        return await _restore_backup(m, swapped, saved, backup)
    outcome = await _reverse_in_sql(m, swapped, saved)
    if isinstance(outcome, Fail) and outcome.reason is Reason.ROLLBACK_FAILED:
        return _ask_for_restore(m, backup, outcome.message)
    return outcome


def restore_token(backup: BackupStatus) -> str:
    """What a person gives to consent to restoring this archive: the start of its sha256."""
    return f"sha256:{backup.sha256[:16]}"


def _ask_for_restore(m: Migration, backup: BackupStatus | None, why: str) -> Outcome:
    if backup is None or not backup.verified:
        return Fail(Reason.ROLLBACK_FAILED, f"{why}; there is no verified backup to restore")
    token = restore_token(backup)
    stale = (
        f" The consent given ({m.restore_consent}) is not for this archive." if m.restore_consent not in (None, token)
        else ""
    )  # fmt: skip
    message = (
        f"{why}. The verified backup {backup.location} can be restored instead: that replaces every object "
        f"in it with its content at backup time and loses every write made since. To restore it, consent "
        f"with {token}.{stale}"
    )
    set_condition(m.status, ConditionType.ROLLED_BACK, False, Reason.RESTORE_NEEDS_CONSENT, message, m.generation)
    return Hold(Reason.RESTORE_NEEDS_CONSENT, message)


async def _restore_backup(
    m: Migration, swapped: journal.JournalEntry, saved: VectorMigrationStatus, backup: BackupStatus
) -> Outcome:
    """Restore the archive (one transaction, by the runtime), then record and check what came back."""
    conn = m.session
    server = await read_server(conn)
    request = RestoreRequest(
        migration=m.name,
        location=backup.location,
        sha256=backup.sha256,
        server_major=server.version_num // 10000,
        keep_schema=JOURNAL_SCHEMA,
    )
    try:
        await m.backup.restore(m.params, request)
    except BackupPending as pending:
        return Wait(Reason.IN_PROGRESS, str(pending), delay=5.0)
    except BackupError as error:
        return Fail(Reason.RESTORE_FAILED, f"restoring {backup.location} failed, nothing changed: {error}")
    original = swapped.detail.get("source") or {}
    source = await read_extension(conn, original.get("extension", m.spec.source.extension))
    if source is None:
        return Fail(Reason.RESTORE_FAILED, f"after the restore, {original.get('extension')} is not installed")
    tables = []
    mode = (saved.verification.checksum_mode if saved.verification else None) or NORMALIZED
    before = {t.name: t for t in (saved.verification.tables if saved.verification else [])}
    for schema, table, columns in swapped.detail.get("tables", []):
        now = await table_checksum(conn, schema, table, set(columns), mode)
        recorded = before.get(f"{schema}.{table}")
        tables.append(
            TableVerification(
                name=f"{schema}.{table}",
                rows_before=recorded.rows_before if recorded else -1,
                rows_after=now.rows,
                checksum_before=recorded.checksum_before if recorded else "unrecorded",
                checksum_after=now.checksum,
            )
        )
    async with conn.transaction():
        await conn.execute(
            f"DELETE FROM {journal.JOURNAL} WHERE migration = $1 AND event <> $2", m.name, journal.ROLLED_BACK
        )
        await journal.record(
            conn, m.name, journal.ROLLED_BACK, swapped.plan_hash,
            {"restoredFrom": backup.location, "tables": [t.model_dump() for t in tables]},
        )  # fmt: skip
    left = await _drop_unused_extension(m, m.spec.target.extension)
    unchanged = all((t.rows_before, t.checksum_before) == (t.rows_after, t.checksum_after) for t in tables)
    message = (
        f"restored {backup.location} (sha256 {backup.sha256[:12]}…): {source.name} {source.version} is back; "
        + ("every table equals its pre-migration checksum" if unchanged else
           "some tables differ from their pre-migration checksums: writes made between the backup and the swap "
           "are gone, as consented")
        + left
    )  # fmt: skip
    set_condition(m.status, ConditionType.ROLLED_BACK, True, Reason.RESTORED, message, m.generation)
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.ROLLED_BACK, message, m.generation)
    return Advance(Phase.ROLLED_BACK, message)


async def _drop_unused_extension(m: Migration, name: str) -> str:
    """Drop the target extension if nothing uses it any more (RESTRICT); else say why it stays."""
    conn = m.session
    if await read_extension(conn, name) is None:
        return ""
    try:
        async with conn.transaction():
            await conn.execute(f"DROP EXTENSION {quote_ident(name)} RESTRICT")
    except asyncpg.DependentObjectsStillExistError as error:
        detail = (error.detail or "").splitlines()
        warning = f"{name} stays installed: objects created after the backup use it ({'; '.join(detail[:3])})"
        warn(m.status, warning)
        return f"; {warning}"
    return f"; {name} dropped"


async def _reverse_in_sql(m: Migration, swapped: journal.JournalEntry, saved: VectorMigrationStatus) -> Outcome:
    """The conversion from the target back to the source, with the indexes saved before the migration.

    The reverse plan is derived exactly as the forward one (the target's objects are read, the
    source's surface is probed, columns and views are mapped back), except that the indexes are
    recreated from the definitions saved before the migration, not mapped from the target's.
    The journal's "swapped" record is removed in the same transaction, so a later run of the
    migration starts from the beginning.
    """
    conn = m.session
    original = swapped.detail.get("source") or {}
    target = await read_extension(conn, m.spec.target.extension)
    if target is None or not original:
        return Fail(Reason.ROLLBACK_FAILED, f"cannot roll back in SQL: extension {m.spec.target.extension} is gone")
    reverse = m.spec.model_copy(deep=True)
    reverse.source.extension, reverse.target.extension = target.name, original["extension"]
    reverse.target.version, reverse.target.target_schema = original["version"], original["schema"]
    reverse.tables, reverse.reindex.mode = [], ReindexMode.ATOMIC
    reverse.rebuild.column_types = []  # the types to go back to come from the saved inventory below
    reverse.strategy = Strategy.IN_PLACE  # converting back in place needs no scratch space, whatever went forward
    backwards = Migration(name=m.name, spec=reverse, params=m.params, reporter=m.reporter, conn=conn)
    server = await read_server(conn)
    inventory = await read_inventory(conn, reverse, server, target, count_rows=False)
    if inventory.blockers:
        return Fail(Reason.ROLLBACK_FAILED, "cannot roll back: " + "; ".join(b.message for b in inventory.blockers))
    # Every column goes back to exactly the type it had: a halfvec column given a 32-bit type by
    # rebuild.columnTypes becomes halfvec again, not the 32-bit type's own counterpart.
    saved_types = {
        (saved_table.name, column.name): column.type
        for saved_table in (saved.inventory.tables if saved.inventory else [])
        for column in saved_table.columns
    }
    backwards.facts.column_types = {
        column_key(c): saved_types[(f"{c.schema}.{c.table}", c.column)]
        for c in inventory.columns
        if (f"{c.schema}.{c.table}", c.column) in saved_types
    }
    try:
        surface = await probe_surface(backwards, inventory, original["schema"], server.can_create_database)
        plan = build_plan(
            inventory,
            surface,
            reverse,
            target_schema=original["schema"],
            target_installed=False,
            column_types=backwards.facts.column_types,
        )
    except (_ProbeFailed, PlanningError) as error:
        return Fail(Reason.ROLLBACK_FAILED, f"cannot roll back: {error}")
    saved_indexes = saved.inventory.indexes if saved.inventory else []
    statements = [s for s in plan.swap if s.step != "build-index"]
    statements += [Statement("restore-index", index.definition) for index in saved_indexes]

    progress = _Progress()
    transaction = await _begin_bounded_transaction(m)
    try:
        mode = backwards.facts.checksum_mode
        tables = await _convert(backwards, statements, inventory, surface, mode, progress)
        progress.step = "journal"
        await conn.execute(
            f"DELETE FROM {journal.JOURNAL} WHERE migration = $1 AND event <> $2", m.name, journal.ROLLED_BACK
        )
        await journal.record(
            conn, m.name, journal.ROLLED_BACK, swapped.plan_hash, {"tables": [t.model_dump() for t in tables]}
        )
        progress.step = "commit"
        await transaction.commit()
    except _DataMismatch as error:
        await _rollback(transaction)
        return Fail(Reason.ROLLBACK_FAILED, f"rollback would change content ({error}); it rolled back itself")
    except (_PlanDrift, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await _rollback(transaction)
        return _transaction_failure(error, progress, m.spec, "rollback")
    record_timing(m.status, "rollbackWriteBlockedSeconds", progress.blocked_seconds)
    m.reporter.task_done("swap")
    unchanged = _equal_to_before_migration(saved, tables, mode)
    message = (
        f"restored {original['extension']} {original['version']}: {len(tables)} table(s) converted back with "
        f"checksums equal, {len(saved_indexes)} original index(es) recreated"
        + ("; every table equals its pre-migration checksum" if unchanged else "")
    )
    set_condition(m.status, ConditionType.ROLLED_BACK, True, Reason.COMPLETED, message, m.generation)
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.ROLLED_BACK, message, m.generation)
    return Advance(Phase.ROLLED_BACK, message)


def _equal_to_before_migration(saved: VectorMigrationStatus, tables: list[TableVerification], mode: str) -> bool:
    """Whether the rolled-back tables hold exactly what they held before the migration."""
    if saved.verification is None or saved.verification.checksum_mode != mode:
        return False
    before = {t.name: (t.rows_before, t.checksum_before) for t in saved.verification.tables}
    return all(before.get(t.name) == (t.rows_after, t.checksum_after) for t in tables)


# -------------------------------------------------------------------------------------- runner

PhaseFunction = Callable[[Migration], Awaitable[Outcome]]

PHASES: dict[Phase, PhaseFunction] = {
    Phase.PENDING: run_checklist,
    Phase.CHECKLIST: run_checklist,
    Phase.BACKUP: run_backup_phase,
    Phase.AWAITING_APPROVAL: run_awaiting_approval,
    Phase.SWAP: run_swap,
    Phase.REINDEX: run_reindex,
    Phase.VERIFY: run_verify,
    Phase.ROLLING_BACK: run_rollback,
}

# Failures after the swap committed (or, for Parallel, the shadows exist), which
# rollback.onFailure: Automatic undoes.
_ROLLBACK_AFTER = (Phase.BACKFILL, Phase.REINDEX, Phase.VERIFY, Phase.CUTOVER, Phase.FINALIZE)
# Where a Parallel migration can be aborted on request: the application still runs on pgvector.
_ABORTABLE = frozenset({Phase.BACKFILL, Phase.REINDEX, Phase.VERIFY, Phase.CUTOVER})
# ...except a spec changed under a swapped database: the person who changed it decides, not the engine.
_NO_ROLLBACK = frozenset({Reason.SPEC_CHANGED_AFTER_SWAP})


def _phases(m: Migration) -> dict[Phase, PhaseFunction]:
    if m.spec.strategy is Strategy.PARALLEL:
        from ..strategies.parallel.legacy import PARALLEL_PHASES  # the Parallel strategy builds on this module's phases

        return PARALLEL_PHASES
    return PHASES


async def step(m: Migration) -> Outcome:
    """Run the current phase once and apply its outcome to the status."""
    phase = m.status.phase
    function = _phases(m).get(phase)
    if function is None:
        return Hold(Reason.IN_PROGRESS, f"phase {phase.value} has no engine step")
    if phase is Phase.PENDING:
        set_phase(m.status, Phase.CHECKLIST, "checking the database", m.generation)
    m.reporter.phase_started(m.status.phase)
    started = time.perf_counter()
    try:
        outcome = await function(m)
    except (DatabaseUnavailable, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as error:
        outcome = Wait(Reason.DATABASE_UNAVAILABLE, f"{m.status.phase.value}: {error}")
    key = timing_key(m.status.phase)
    if not isinstance(outcome, Wait):
        m.status.timings[key] = round(m.status.timings.get(key, 0.0) + time.perf_counter() - started, 3)
    if isinstance(outcome, Fail) and m.status.phase in _ROLLBACK_AFTER and outcome.reason not in _NO_ROLLBACK:
        m.facts.failure = outcome
        if m.spec.rollback.on_failure is RollbackPolicy.AUTOMATIC:
            outcome = Advance(Phase.ROLLING_BACK, f"{outcome.message} Rolling back (rollback.onFailure: Automatic).")
        else:
            outcome = Fail(
                outcome.reason,
                f"{outcome.message} "
                + (
                    "The application's tables are untouched and the shadows stay for inspection"
                    if m.spec.strategy is Strategy.PARALLEL and m.status.phase is not Phase.FINALIZE
                    else "The migrated data is intact on the target"
                )
                + "; rollback.onFailure is Manual.",
            )
    apply(m, outcome)
    if m.status.phase is Phase.ROLLED_BACK and isinstance(outcome, Advance):
        # Rolled back is not healthy: Stalled with the reason the migration failed for (remembered
        # by this run, or recorded in the failed phase's condition when an earlier run saw it).
        requested = Fail(Reason.ROLLBACK_REQUESTED, "") if m.rollback_requested else None
        failure = m.facts.failure or requested or _recorded_failure(m.status)
        if failure.message:
            m.status.message = f"{failure.message} Rolled back: {m.status.message}."
        summarize(m.status, failure.reason, m.status.message, m.generation)
    return outcome


def request_rollback(m: Migration, by: str) -> bool:
    """Turn a succeeded migration into one rolling back, when a person asked; whether it did."""
    if not m.rollback_requested:
        return False
    abortable = m.spec.strategy is Strategy.PARALLEL and m.status.phase in _ABORTABLE
    if m.status.phase is not Phase.SUCCEEDED and not abortable:
        return False
    set_phase(m.status, Phase.ROLLING_BACK, f"rollback requested by {by}", m.generation)
    return True


def _recorded_failure(status: VectorMigrationStatus) -> Fail:
    for kind in (ConditionType.VERIFIED, ConditionType.INDEXES_REBUILT):
        recorded = condition(status, kind)
        if recorded is not None and recorded.status == "False" and recorded.reason in Reason.__members__.values():
            return Fail(Reason(recorded.reason), recorded.message)
    return Fail(Reason.ROLLED_BACK, "")


def apply(m: Migration, outcome: Outcome) -> None:
    """Write an outcome into the status through the named mutations."""
    if isinstance(outcome, Advance):
        set_phase(m.status, outcome.phase, outcome.message, m.generation)
    elif isinstance(outcome, Fail):
        fail(m.status, outcome.reason, outcome.message, m.generation)
    else:
        hold(m.status, outcome.reason, outcome.message, m.generation)


async def run(
    m: Migration,
    *,
    max_waits: int = 3,
    give_up_on: frozenset[Reason] = frozenset(),
    reconnect_for: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> VectorMigrationStatus:
    """Drive phases until success, failure or a hold; retry waits with backoff a bounded number of times.

    Waits whose reason is in ``give_up_on`` fail at once (a command line should not sit out
    another migration's lock; an operator should). With ``reconnect_for`` seconds, a connection
    lost after it was made (a server restart, a failover) is tried again with backoff until that
    deadline, whatever ``give_up_on`` says: the journal tells the new session what is done. A
    database that was never reached is still given up on at once (a wrong URL is no outage).
    """
    waits = 0
    connected = False
    lost_since: float | None = None
    request_rollback(m, "the caller")
    try:
        while not m.status.phase.terminal:
            if m.conn is None:
                opened = await open_session(m)
                if opened is not None:
                    outcome: Outcome = opened
                    apply(m, outcome)
                else:
                    connected, lost_since = True, None
                    outcome = await step(m)
            else:
                outcome = await step(m)
            if isinstance(outcome, Wait) and outcome.reason is Reason.DATABASE_UNAVAILABLE and connected:
                await close_session(m)
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since < reconnect_for:
                    m.reporter.warning(f"{outcome.message}; reconnecting (for up to {reconnect_for:.0f}s)")
                    await sleep(min(2.0 * 2 ** min(waits, 4), 30.0))
                    waits += 1
                    continue
            if isinstance(outcome, Hold):
                break
            if isinstance(outcome, Wait) and outcome.reason is Reason.CUTOVER_PAUSED:
                await sleep(outcome.delay)  # a pause the spec asks for is not a failure to retry
                continue
            if isinstance(outcome, Wait):
                waits += 1
                if outcome.reason in (Reason.DATABASE_UNAVAILABLE,):
                    await close_session(m)
                if outcome.reason in give_up_on:
                    fail(m.status, outcome.reason, outcome.message, m.generation)
                    break
                if waits > max_waits:
                    fail(m.status, outcome.reason, f"gave up after {waits} attempts: {outcome.message}", m.generation)
                    break
                m.reporter.warning(outcome.message)
                await sleep(min(outcome.delay * 2 ** (waits - 1), 300.0))
                continue
            waits = 0
    finally:
        await close_session(m)
    return m.status
