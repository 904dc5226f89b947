"""The journal's records, typed: what each event stores, read and written in this one place.

Every record carries a ``schemaVersion``. Version 1 is what the engine wrote before records were
typed (the same fields, no version); it is still read (tests/test_journal_records.py proves it
on rows written by that code). A record from a newer engine than this one is refused with a
message rather than half-understood: the journal says what is done, and a misread journal could
repeat a swap.
"""

# size: every strategy's record types in one module, on purpose: one schema version covers them all.
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ..api import TableVerification, VectorMigrationStatus
from ..database import journal
from ..database.measure import IndexMeasurement, IndexTarget
from ..vocabulary import ChecksumMode, Phase
from .plan import CarriedBuild, IndexRebuild
from .probe import Probe

# 3: a shadow's identity sequences, what LIKE does not copy (extras) and the plan's rewrites; an index's
# comment. Read from older rows as absent: such a Parallel finalize fails its catalog check rather than lose them.
SCHEMA_VERSION = 3

# The journal's events, by name (the names are stored: they never change).
SWAPPED = journal.SWAPPED
REINDEXED = journal.REINDEXED
VERIFIED = journal.VERIFIED
ROLLED_BACK = journal.ROLLED_BACK
PREPARED = "parallel_prepared"
BACKFILL = "parallel_backfill"
FINALIZED = "parallel_finalized"
OLD_DROPPED = "parallel_old_dropped"
REPLICA_PREPARING = "replicate_preparing"  # the new database is being made, under this plan hash
REPLICA_PREPARED = "replicate_prepared"
REPLICA_SWITCHED = "replicate_switched"
REPLICA_STOPPED = "replicate_stopped"


class UnreadableJournal(RuntimeError):
    """A journal record this engine cannot read (newer, or damaged); a person must look."""


class Record(BaseModel):
    """What every record has: the version of its shape."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    schema_version: int = Field(1, alias="schemaVersion")  # absent: written before records were versioned


class IndexBuild(BaseModel):
    """An index the reindex builds (or the swap built) on the target."""

    index_schema: str = Field(alias="schema")
    name: str
    table: str
    method: str
    definition: str
    concurrent: bool
    comment: str | None = None  # COMMENT ON INDEX, given again once it is built
    # made ON ONLY a partitioned table: valid once its partitions' indexes are attached, never before
    partitioned: bool = False

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def carried(cls, build: CarriedBuild) -> IndexBuild:
        """The record of a carried index built after the swap commits."""
        return cls(
            index_schema=build.schema,
            name=build.name,
            table=build.table,
            method=build.method,
            definition=build.sql,
            concurrent=True,
            comment=build.comment,
        )

    @classmethod
    def of(cls, rebuild: IndexRebuild) -> IndexBuild:
        """The record of a planned index rebuild."""
        saved = rebuild.saved
        return cls(
            index_schema=saved.schema,
            name=saved.name,
            table=f"{saved.table_schema}.{saved.table}",
            method=rebuild.method,
            definition=rebuild.definition,
            concurrent=rebuild.concurrent,
            comment=saved.comment,
            partitioned=saved.partitioned,
        )


class ProbeRecord(BaseModel):
    """One index's measurement inputs and its baseline."""

    model_config = ConfigDict(populate_by_name=True)

    index: str
    table_rows: int = Field(alias="tableRows")
    after: dict[str, Any]
    queries: list[str]
    baseline: dict[str, Any] | None

    @classmethod
    def of(cls, probe: Probe) -> ProbeRecord:
        """The record of a probe."""
        return cls(
            index=probe.index,
            table_rows=probe.table_rows,
            after=asdict(probe.after),
            queries=probe.queries,
            baseline=asdict(probe.baseline) if probe.baseline else None,
        )

    def probe(self) -> Probe:
        """The probe recorded."""
        baseline = None
        if self.baseline is not None:
            truth = self.baseline.get("truth")
            baseline = IndexMeasurement(
                **{**self.baseline, "truth": tuple(tuple(pair) for pair in truth) if truth else None}
            )
        return Probe(self.index, self.table_rows, IndexTarget(**self.after), list(self.queries), baseline)


class SourceRecord(BaseModel):
    """The source extension as it was before the swap (what a rollback restores)."""

    model_config = ConfigDict(populate_by_name=True)

    extension: str
    version: str
    source_schema: str = Field(alias="schema")


class SwapRecord(Record):
    """Recorded with the swap, in its transaction: everything the later phases and a rollback need."""

    source: SourceRecord | None
    checksum_mode: ChecksumMode = Field(ChecksumMode.NORMALIZED, alias="checksumMode")
    spec: dict[str, Any] | None = None
    tables: list[list[Any]] = Field(default_factory=list)  # [schema, table, [columns]]
    status: VectorMigrationStatus
    rebuilds: list[IndexBuild] = Field(default_factory=list)
    probes: list[ProbeRecord] = Field(default_factory=list)


class ShadowIndex(BaseModel):
    """A vector index of a shadow table, and the original it replaces."""

    name: str
    original: str
    definition: str
    method: str


class Grant(BaseModel):
    """One privilege given to a role (PUBLIC for everyone)."""

    grantee: str
    privilege: str
    grantable: bool = False


class IdentitySequence(BaseModel):
    """A table's identity sequence: at the finalize the migrated table's own takes its name and its grants."""

    column: str
    sequence: str  # the original's, as pg_get_serial_sequence names it
    name: str  # its name in its schema: the migrated table's sequence takes it, the original's goes aside
    grants: list[Grant] = Field(default_factory=list)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ColumnSettings(_Camel):
    """A column's settings a person may have made: SET STATISTICS, SET STORAGE (where not the type's), SET (…)."""

    column: str
    statistics: int | None = None
    storage: str | None = None  # pg_attribute.attstorage: p, e, x, m
    options: list[str] = Field(default_factory=list)  # attoptions, "key=value"


class StatisticsObject(_Camel):
    """An extended statistics object on the table (CREATE STATISTICS), by its name."""

    statistics_schema: str = Field(alias="schema")
    name: str
    definition: str  # pg_get_statisticsobjdef
    target: int | None = None
    comment: str | None = None


class TableRule(_Camel):
    """A rule on the table (CREATE RULE): made on the migrated table at the finalize, disabled on the old one."""

    name: str
    definition: str  # pg_get_ruledef, which names the table
    enabled: str = "O"  # pg_rewrite.ev_enabled
    comment: str | None = None


class PublicationMembership(_Camel):
    """A publication that lists the table, with the columns and rows it publishes."""

    name: str
    columns: list[str] | None = None
    row_filter: str | None = None


class TableRewrites(_Camel):
    """What the plan made again for the target on a table (names only): the finalize's catalog check allows it."""

    defaults: list[str] = Field(default_factory=list)  # columns whose default names the source's types
    checks: list[str] = Field(default_factory=list)  # CHECK constraints rewritten
    indexes: list[str] = Field(default_factory=list)  # carried indexes rewritten (expressions, several keys)
    dropped: list[str] = Field(default_factory=list)  # indexes dropped by indexes.unmappable: Drop


class TableExtras(_Camel):
    """What LIKE does not copy of a table; each is given to the shadow or moved to it (parallel/extras.py)."""

    options: list[str] = Field(default_factory=list)  # reloptions, "key=value"
    replica_identity: str = "d"  # pg_class.relreplident
    replica_index: str | None = None
    clustered: str | None = None  # the index of its CLUSTER mark
    columns: list[ColumnSettings] = Field(default_factory=list)
    index_comments: dict[str, str] = Field(default_factory=dict)  # original index -> comment
    constraint_comments: dict[str, str] = Field(default_factory=dict)  # original constraint -> comment
    statistics: list[StatisticsObject] = Field(default_factory=list)
    rules: list[TableRule] = Field(default_factory=list)
    publications: list[PublicationMembership] = Field(default_factory=list)


class ShadowTable(BaseModel):
    """One table moving through a shadow (strategy Parallel): what every later phase needs."""

    table_schema: str = Field(alias="schema")
    table: str
    shadow: str
    old: str
    key: list[list[str]]  # [[column, type]] of the primary key, in key order
    columns: list[str]  # insertable (not generated) columns
    forward: dict[str, str]  # vector column -> SQL converting {value} to the target type
    backward: dict[str, str]  # vector column -> SQL converting {value} back to the source type
    vector_columns: list[str]
    index_renames: list[list[str]]  # [[shadow index, original name]]
    vector_indexes: list[ShadowIndex]
    foreign_keys: list[str]  # foreign keys copied NOT VALID, validated after the backfill
    sequences: list[list[str]]  # [[column, owned sequence]] moved to the new table at finalize
    identities: list[list[str]]  # [[column, old identity sequence]]: the new one continues from it
    # Version 2: the original's index names (renamed to *_pgvector_old at the finalize), and the owner.
    original_indexes: list[str] | None = None
    owner: str | None = None
    # The table's own comment, given back to it at the finalize (the shadow carries the engine's
    # marker until then); version 1 records did not keep it (comment_kept False: left as it was).
    comment: str | None = None
    comment_kept: bool = False
    # [[schema, table, name, definition]] of other tables' foreign keys to it, re-pointed at the
    # finalize (NOT VALID, validated right after it) and back by a rollback; absent before 0.2.
    referencing_keys: list[list[str]] = Field(default_factory=list)
    # Row-level security on the table: the sync functions then run as its owner, so that mirroring
    # a write the policies allowed is never refused by the same policies on the other copy.
    row_security: bool = False
    # [[name, pg_get_triggerdef, tgenabled]] of the table's own triggers: made on the migrated table at
    # the finalize and disabled on the old one (the reverse mirror must not fire them twice)
    triggers: list[list[str]] = Field(default_factory=list)
    # Absent before 0.3: the identity sequences renamed at the finalize (a record without them leaves
    # the migrated table's under the shadow's name, as 0.2 did)
    identity_sequences: list[IdentitySequence] = Field(default_factory=list)
    # Absent before 0.3 (nothing of it was carried): what LIKE does not copy (parallel/extras.py)
    extras: TableExtras = Field(default_factory=TableExtras)
    rewrites: TableRewrites = Field(default_factory=TableRewrites)

    model_config = ConfigDict(populate_by_name=True)

    @property
    def name(self) -> str:
        """The table as schema.table, for people."""
        return f"{self.table_schema}.{self.table}"


class ShadowRecord(SwapRecord):
    """Recorded when the shadows were made (strategy Parallel), in that transaction."""

    shadows: list[ShadowTable]
    created_extension: bool = Field(False, alias="createdExtension")
    # [[step, sql]]: the functions naming the source's types, created for the target at the finalize,
    # and given back as they were by a rollback after it (absent before 0.2: none were carried)
    functions: list[list[str]] = Field(default_factory=list)
    functions_back: list[list[str]] = Field(default_factory=list, alias="functionsBack")
    # [[step, sql]]: the views over the tables, dropped and created again so they read the tables that
    # have the names after the finalize, and again after a rollback's swap back
    view_drops: list[list[str]] = Field(default_factory=list, alias="viewDrops")
    view_creates: list[list[str]] = Field(default_factory=list, alias="viewCreates")
    # [[step, sql]]: those views as they were, when a query was rewritten for the target (else empty:
    # view_creates serve a rollback too)
    view_creates_back: list[list[str]] = Field(default_factory=list, alias="viewCreatesBack")

    @property
    def views_back(self) -> list[list[str]]:
        """The views as a rollback after the finalize creates them again, over the pgvector tables."""
        return self.view_creates_back or self.view_creates

    functions_validated: list[list[str]] = Field(default_factory=list, alias="functionsValidated")
    # [[step, sql, role or ""]]: the materialized views over the tables, made again over the migrated
    # tables before the old ones go (absent before 0.3: Parallel refused them)
    materialized_moves: list[list[str]] = Field(default_factory=list, alias="materializedMoves")


class BackfillCursor(BaseModel):
    """How far one table's backfill got: the last key copied, committed with its batch."""

    last: list[str] | None = None
    copied: int = 0
    done: bool = False


class BackfillRecord(Record):
    """Each table's backfill cursor."""

    tables: dict[str, BackfillCursor] = Field(default_factory=dict)


class FinalizeRecord(Record):
    """Recorded with the finalize's renames: when the old tables may go, and how long writes waited."""

    drop_old_after: str = Field(alias="dropOldAfter")
    lock_window_seconds: float = Field(alias="lockWindowSeconds")


class ReindexRecord(Record):
    """Recorded after the reindex: how many indexes it built."""

    built: int = 0


class VerifiedRecord(Record):
    """The succeeded status, recorded before the status says so: a re-run finds it and does nothing."""

    status: VectorMigrationStatus


class RollbackRecord(Record):
    """Recorded with a rollback, in its transaction."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    tables: list[TableVerification] = Field(default_factory=list)
    finalized: bool | None = None
    restored_from: str | None = Field(None, alias="restoredFrom")


class ReplicaRecord(SwapRecord):
    """Recorded when a Replicate migration's new database was subscribed (strategy Replicate)."""

    source_database: str = Field(alias="sourceDatabase")
    target_database: str = Field(alias="targetDatabase")
    old_database: str = Field(alias="oldDatabase")
    # The publication, slot and subscription carrying rows to the new database, and those carrying
    # them back to the old one after the switchover (each the same name for all three objects).
    forward: str
    back: str
    published: list[list[str]] = Field(default_factory=list)  # [[schema, table]] of every replicated table
    # replicate.target: the new database is on another server, whose endpoint (host:port/database)
    # the application moves to; the source is fenced at the switchover and given back this
    # connection limit when it is live again.
    endpoint: str | None = None
    source_connection_limit: int = Field(default=-1, alias="sourceConnectionLimit")
    # [[step, sql, role or ""]]: the conversion's other index builds (carried indexes), run after the copy
    builds: list[list[str]] = Field(default_factory=list)
    # What the approved plan changes of the source's catalog (catalog_state.Expected.as_document): the
    # switchover compares the two databases with it at its cut. Absent before 0.3: not compared.
    catalog: dict[str, Any] | None = None


class SwitchRecord(Record):
    """Recorded in the new database once the switchover renamed the databases."""

    drop_old_after: str = Field(alias="dropOldAfter")
    switchover_seconds: float = Field(alias="switchoverSeconds")
    tables: list[TableVerification] = Field(default_factory=list)  # both sides' checksums, under the block


class OldTablesDropped(Record):
    """Recorded when a Parallel migration's old tables were dropped after keepOldFor."""


RecordT = TypeVar("RecordT", bound=Record)


@dataclass(frozen=True)
class Journal:
    """A migration's recorded events, typed; each None when the event was never recorded.

    Each record is validated once, when first asked for (a status is a large document).
    """

    entries: dict[str, journal.JournalEntry]

    def __contains__(self, event: str) -> bool:
        return event in self.entries

    def plan_hash(self, event: str) -> str:
        """The plan hash recorded with an event."""
        return self.entries[event].plan_hash

    def get(self, event: str, kind: type[RecordT]) -> RecordT | None:
        """The record of an event, or None; UnreadableJournal when it cannot be read."""
        entry = self.entries.get(event)
        if entry is None:
            return None
        version = entry.detail.get("schemaVersion", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise UnreadableJournal(
                f"the journal's {event} record has schemaVersion {version}; this vector-migration reads up to "
                f"{SCHEMA_VERSION}: run the version that wrote it (or newer)"
            )
        try:
            return kind.model_validate(entry.detail)
        except ValidationError as error:
            raise UnreadableJournal(f"the journal's {event} record cannot be read: {error}") from None

    @cached_property
    def swapped(self) -> SwapRecord | None:
        """The swap's record (InPlace, Rebuild)."""
        return self.get(SWAPPED, SwapRecord)

    @cached_property
    def prepared(self) -> ShadowRecord | None:
        """The shadows' record (Parallel)."""
        return self.get(PREPARED, ShadowRecord)

    @cached_property
    def verified(self) -> VerifiedRecord | None:
        """The succeeded status, when the migration was verified."""
        return self.get(VERIFIED, VerifiedRecord)

    @cached_property
    def backfill(self) -> BackfillRecord | None:
        """The backfill cursors (Parallel)."""
        return self.get(BACKFILL, BackfillRecord)

    @property
    def first_change(self) -> SwapRecord | None:
        """The record of the migration's first change, whichever strategy made it."""
        return self.swapped or self.prepared or self.replica

    @cached_property
    def replica(self) -> ReplicaRecord | None:
        """The new database's record (Replicate)."""
        return self.get(REPLICA_PREPARED, ReplicaRecord)

    @cached_property
    def switched(self) -> SwitchRecord | None:
        """The switchover's record (Replicate)."""
        return self.get(REPLICA_SWITCHED, SwitchRecord)


def latest_status(recorded: Journal) -> VectorMigrationStatus | None:
    """The furthest status the journal records: the succeeded one, else the one kept with the first change."""
    if recorded.verified is not None:
        return recorded.verified.status
    if recorded.first_change is not None:
        return recorded.first_change.status
    if ROLLED_BACK in recorded:
        return VectorMigrationStatus(phase=Phase.ROLLED_BACK, message="rolled back (recorded in the journal)")
    return None


async def read(conn: asyncpg.Connection, migration: str) -> Journal:
    """A migration's journal."""
    return Journal(await journal.read(conn, migration))


async def write(conn: asyncpg.Connection, migration: str, event: str, plan_hash: str, record: Record) -> None:
    """Record an event (inside the caller's transaction when there is one), at the current schema version."""
    record.schema_version = SCHEMA_VERSION
    await journal.record(conn, migration, event, plan_hash, record.model_dump(by_alias=True, mode="json"))


async def forget(conn: asyncpg.Connection, migration: str, event: str) -> None:
    """Remove one record of a migration (inside the caller's transaction when there is one)."""
    await conn.execute(f"DELETE FROM {journal.JOURNAL} WHERE migration = $1 AND event = $2", migration, event)


async def forget_all_but_rollback(conn: asyncpg.Connection, migration: str, plan_hash: str, record: Record) -> None:
    """A rollback's journal: every record of the migration goes, the rollback's is written (one transaction).

    A later run of the migration then starts from the beginning.
    """
    await conn.execute(
        f"DELETE FROM {journal.JOURNAL} WHERE migration = $1 AND event <> $2", migration, journal.ROLLED_BACK
    )
    await write(conn, migration, ROLLED_BACK, plan_hash, record)
