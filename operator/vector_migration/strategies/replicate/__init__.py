"""Replicate: the rows move to a new database by PostgreSQL's logical replication while the application writes.

The new database (``<database>_<target>`` on the same server) gets the source's schema, converted
to the target as InPlace would convert it, and no pgvector: the target's names may collide with
pgvector's (RuVector's install script, the v2 plan), which Parallel cannot serve. A subscription
copies every table and streams every change; the vector indexes are built there once the rows
are in, and measured against the source's baseline. The switchover then blocks writes on the
source, waits for the new database to catch up, proves every table equal, carries the sequences,
and swaps the two databases' names in one transaction. The old database follows the new one
(replication turned around) until ``replicate.keepOldFor``, so a rollback loses nothing.

Phases: Checklist, Backup, (approval), Swap (the new database: prepare.py), Backfill (the initial
copy: stream.py), Reindex, Verify and Cutover (``cutover.steps``, reads weighted onto the new
database, each step measured there: stream.py), Finalize (the switchover: finalize.py,
switchover.py), and Rolling back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ...api import VectorMigrationStatus
from ...database.catalog import Blocker, SourceInventory
from ...database.locks import (
    CATALOG_AND_TARGET_LOCKS,
    NO_STRATEGY_NEEDS_FEWER,
    extension_members,
    lock_blockers,
    lock_table,
)
from ...database.sql import ConnectionParams
from ...database.surface import TargetSurface
from ...engine.context import Migration, PhaseFunction
from ...engine.conversion import build_plan
from ...engine.outcomes import Advance, Outcome
from ...engine.plan import MigrationPlan, StrategyPlan
from ...engine.records import Journal
from ...engine.strategy import PlanInputs
from ...phases.approval import run_awaiting_approval
from ...phases.backup import run_backup_phase
from ...phases.checklist import run_checklist
from ...vocabulary import Phase, ReindexMode, Strategy
from .facts import database_facts, database_statements, replicated_tables, replication_blockers
from .finalize import run_replica_rollback, run_switchover, seconds_until_replication_stops, stop_following
from .other_server import endpoint, target_server_blockers
from .plan import ReplicatePlan, allow_connections, conninfo
from .prepare import run_create_replica
from .recorded import replica_recorded, switch_recorded
from .sessions import across_servers, derived_names, login, maintenance, target_login
from .stream import run_initial_copy, run_replica_cutover, run_replica_reindex, run_replica_verify
from .teardown import carries_marker

REPLICATE_PHASES: Mapping[Phase, PhaseFunction] = {
    Phase.PENDING: run_checklist,
    Phase.CHECKLIST: run_checklist,
    Phase.BACKUP: run_backup_phase,
    Phase.AWAITING_APPROVAL: run_awaiting_approval,
    Phase.SWAP: run_create_replica,
    Phase.BACKFILL: run_initial_copy,
    Phase.REINDEX: run_replica_reindex,
    Phase.VERIFY: run_replica_verify,
    Phase.CUTOVER: run_replica_cutover,
    Phase.FINALIZE: run_switchover,
    Phase.ROLLING_BACK: run_replica_rollback,
}


class Replicate:
    """A new database fed by logical replication; a switchover renames it into the application's place."""

    kind = Strategy.REPLICATE
    phases = REPLICATE_PHASES
    # Once the new database exists a failure leaves it (and its replication) in place.
    undo_on_failure = frozenset({Phase.BACKFILL, Phase.REINDEX, Phase.VERIFY, Phase.CUTOVER, Phase.FINALIZE})
    # Until the switchover the application runs on the source, untouched: a person may abort at once.
    abortable = frozenset({Phase.BACKFILL, Phase.REINDEX, Phase.VERIFY, Phase.CUTOVER})

    def resume(self, m: Migration, recorded: Journal) -> Outcome | None:
        """With the new database recorded: continue its copy (each phase finds its own place again)."""
        if replica_recorded(recorded) is None:
            return None
        if switch_recorded(recorded) is not None:
            return Advance(Phase.FINALIZE, "the switchover had already renamed the databases; completing it")
        return Advance(Phase.BACKFILL, "the new database already exists; continuing with its copy")

    def convert(self, m: Migration, inputs: PlanInputs) -> MigrationPlan:
        """The InPlace conversion, for the new database: its settings are written to that database."""
        spec = m.spec.model_copy(deep=True)
        spec.reindex.mode = ReindexMode.ATOMIC  # the indexes are built after the copy, with no writer but replication
        names = derived_names(m, inputs.inventory.server.database)
        server = dataclasses.replace(inputs.inventory.server, database=names.target)
        return build_plan(
            dataclasses.replace(inputs.inventory, server=server),
            inputs.surface,
            spec,
            target_schema=inputs.target_schema,
            target_installed=inputs.target_installed,
        )

    async def check(self, m: Migration, inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
        """The server's replication capacity, every table's replica identity, and the names the databases need."""
        names = derived_names(m, inventory.server.database)
        # The new database is built a statement at a time (prepare.py): the largest transactions are the
        # switchover's cut (a SHARE lock on every replicated table) and dropping or creating an extension.
        cut = len(await replicated_tables(m.session))
        locks = max(cut, await extension_members(m.session, inventory.source.name)) + CATALOG_AND_TARGET_LOCKS
        largest = f"the switchover's cut of {cut} table(s), or an extension statement in the new database,"
        return [
            *await replication_blockers(m.session, names, m.name),
            *await target_server_blockers(m, names, m.name),
            *lock_blockers(await lock_table(m.session), locks, largest, NO_STRATEGY_NEEDS_FEWER),
        ]

    async def plan(self, m: Migration, inputs: PlanInputs, conversion: MigrationPlan) -> StrategyPlan:
        """The new database, the schema copy and its conversion, the replication channels and the switchover."""
        names = derived_names(m, inputs.inventory.server.database)
        facts = await database_facts(m.session)
        return ReplicatePlan(
            conversion=conversion,
            names=names,
            tables=tuple(await replicated_tables(m.session)),
            database=tuple(database_statements(facts, names.target, names.marker(m.name))),
            connection=conninfo(login(m), names.source, with_password=False),
            back_connection=conninfo(target_login(m), names.target, with_password=False),
            endpoint=endpoint(target_login(m), names.target) if names.across_servers else None,
            drop_old=m.spec.replicate.drop_old,
        )

    def kept_after_failure(self, phase: Phase) -> str:
        """Before the switchover the application's database is untouched; after it, the data is on the target."""
        if phase is Phase.FINALIZE:
            return "The application's database is the one it was before, or the migrated one if the names turned"
        return "The application's database is untouched; the new database and its replication stay for inspection"

    @property
    def leftovers(self) -> OldDatabase:
        """The old database, following the new one until replicate.keepOldFor has passed."""
        return OldDatabase()

    @property
    def database_move(self) -> ToTheNewDatabase:
        """The application moves to the new database: where it is, and the fence of a cut-off switchover."""
        return ToTheNewDatabase()


class OldDatabase:
    """The database the application left: it follows the new one until keepOldFor, then stops (dropped on request)."""

    def due_in(self, status: VectorMigrationStatus) -> float | None:
        """Seconds until the old database may stop following (replicate.keepOldFor)."""
        return seconds_until_replication_stops(status)

    async def clean_up(self, m: Migration) -> str:
        """Stop replication into the old database; drop it when replicate.dropOld says so."""
        return await stop_following(m)

    def kept_for(self, remaining: float) -> str:
        """The old database, kept following the new one until keepOldFor has passed."""
        return f"the old database follows the new one for {remaining:.0f}s more (replicate.keepOldFor)"


class ToTheNewDatabase:
    """Replicate moves the application to a new database: where the migrated tables are, and undoing a fence."""

    def migrated_database(self, m: Migration, recorded: Journal) -> ConnectionParams | None:
        """Across servers, once switched over: the new database there (the control session stays on the old one)."""
        replica = replica_recorded(recorded)
        if replica is None or replica.endpoint is None or switch_recorded(recorded) is None:
            return None
        return target_login(m).with_database(replica.target_database)

    async def recover_connection(self, m: Migration) -> bool:
        """The application's database closed by a switchover that was cut off: open it again (True when it did).

        Only when this migration's new database exists beside it (or on replicate.target's server): a
        database closed by anyone else stays closed.
        """
        database = m.params.dbname or ""
        names = derived_names(m, database)
        if across_servers(m):
            if not await carries_marker(m, names.target, names.marker(m.name), m.inputs.target_server):
                return False
            async with maintenance(m) as admin:
                closed = await admin.fetchval(
                    "SELECT NOT datallowconn FROM pg_catalog.pg_database WHERE datname = $1", database
                )
                if closed:
                    await admin.execute(allow_connections(database, True))
            return bool(closed)
        async with maintenance(m) as admin:
            rows = await admin.fetch(
                "SELECT datname, datallowconn, pg_catalog.shobj_description(oid, 'pg_database') AS comment "
                "FROM pg_catalog.pg_database WHERE datname = ANY($1::text[])",
                [database, names.target],
            )
            found = {r["datname"]: r for r in rows}
            marker = names.marker(m.name)
            closed = database in found and not found[database]["datallowconn"]
            # the new database beside it (the way there), or the database itself (the way back)
            ours = any(found[name]["comment"] == marker for name in (names.target, database) if name in found)
            if not (closed and ours):
                return False
            await admin.execute(allow_connections(database, True))
        return True
