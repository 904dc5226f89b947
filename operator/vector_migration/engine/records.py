"""The journal's records, typed: the engine's own, and how every record is read and written.

Every record carries a ``schemaVersion``; one version covers the engine's records and each
strategy's (strategies/parallel/recorded.py, strategies/replicate/recorded.py). Version 1 is what
the engine wrote before records were typed (the same fields, no version); version 3 wrote some
fields as lists by position (Positional reads them). Both are still read (tests/test_journal_records.py
proves it on rows written by that code). A record from a newer engine than this one is refused
with a message rather than half-understood: the journal says what is done, and a misread journal
could repeat a swap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, TypeVar, cast

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..api import TableVerification, VectorMigrationStatus
from ..database import journal
from ..database.measure import IndexMeasurement, IndexTarget
from ..vocabulary import ChecksumMode, Phase, StatementKind
from .plan import CarriedBuild, IndexRebuild, Statement
from .probe import Probe

# 3: a shadow's identity sequences, what LIKE does not copy (extras) and the plan's rewrites; an index's
# comment. Read from older rows as absent: such a Parallel finalize fails its catalog check rather than lose them.
# 4: what were lists of strings by position (a key's columns, renames, triggers, statements, tables) are
# records with named fields (Positional); older rows are read by position (tests/fixtures/journal-v3.json).
SCHEMA_VERSION = 4

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
IN_PLACE_BATCHES = "inplace_batches"  # InPlace in batches: the approved batches and how many committed


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


class Positional(BaseModel):
    """A record written as a list of strings by position until schema version 4, and by name since."""

    @model_validator(mode="before")
    @classmethod
    def _by_position(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            names = list(cls.model_fields)
            if len(data) > len(names):
                raise ValueError(f"{len(data)} values for {cls.__name__}'s {len(names)} fields")
            return dict(zip(names, data, strict=False))
        return data


class RecordedStatement(Positional):
    """A planned statement kept in the journal, to run in a later phase (or by a rollback) as planned."""

    step: StatementKind
    sql: str
    role: str | None = None  # the role it runs as (a table owner's code); written "" before version 4

    @field_validator("role")
    @classmethod
    def _no_role(cls, role: str | None) -> str | None:
        return role or None

    @classmethod
    def of(cls, statement: Statement) -> RecordedStatement:
        """The record of a planned statement."""
        return cls(step=statement.step, sql=statement.sql, role=statement.run_as)

    @property
    def statement(self) -> Statement:
        """The statement as planned."""
        return Statement(self.step, self.sql, run_as=self.role)


class TableName(Positional):
    """A table by schema and name."""

    table_schema: str = Field(alias="schema")
    table: str

    model_config = ConfigDict(populate_by_name=True)


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


RecordT = TypeVar("RecordT", bound=Record)


@dataclass(frozen=True)
class Journal:
    """A migration's recorded events, typed; each None when the event was never recorded.

    Each record is validated once, when first asked for (a status is a large document). The strategies'
    own records are theirs (strategies/parallel/recorded.py, strategies/replicate/recorded.py).
    """

    entries: dict[str, journal.JournalEntry]
    _read: dict[tuple[str, type[Record]], Record] = field(default_factory=dict, repr=False, compare=False)

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
        read = self._read.get((event, kind))
        if read is None:
            read = self._read[(event, kind)] = self._validated(event, entry, kind)
        return cast(RecordT, read)

    @staticmethod
    def _validated(event: str, entry: journal.JournalEntry, kind: type[RecordT]) -> RecordT:
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
    def verified(self) -> VerifiedRecord | None:
        """The succeeded status, when the migration was verified."""
        return self.get(VERIFIED, VerifiedRecord)

    @property
    def first_change(self) -> SwapRecord | None:
        """The record of the migration's first change, whichever strategy made it (each extends SwapRecord)."""
        return (
            self.swapped
            or self.get(IN_PLACE_BATCHES, SwapRecord)
            or self.get(PREPARED, SwapRecord)
            or self.get(REPLICA_PREPARED, SwapRecord)
        )


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
