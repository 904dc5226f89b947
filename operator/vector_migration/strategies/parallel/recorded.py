"""Parallel's journal records: the shadow tables, the backfill's cursors, the finalize and the old tables' end.

Read and written through the engine's journal (engine/records.py: the schema version, the event
names, reading older rows); the shapes are this strategy's own.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ...engine.records import (
    BACKFILL,
    PREPARED,
    Journal,
    Positional,
    Record,
    RecordedStatement,
    SwapRecord,
)


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


class KeyColumn(Positional):
    """A primary key's column and its type."""

    column: str
    type: str


class IndexRename(Positional):
    """A shadow's index and the original's name it takes at the finalize."""

    shadow: str
    original: str


class ColumnSequence(Positional):
    """A column and a sequence: one it owns, or the identity sequence the new one continues from."""

    column: str
    sequence: str


class ForeignKeyTo(Positional):
    """Another table's foreign key to a moving table: re-pointed at the finalize, back by a rollback."""

    table_schema: str = Field(alias="schema")
    table: str
    name: str
    definition: str

    model_config = ConfigDict(populate_by_name=True)


class TriggerCopy(Positional):
    """A table's own trigger: made on the migrated table, its firing mode (pg_trigger.tgenabled) given back."""

    name: str
    definition: str  # pg_get_triggerdef
    enabled: str


class ShadowTable(BaseModel):
    """One table moving through a shadow (strategy Parallel): what every later phase needs."""

    table_schema: str = Field(alias="schema")
    table: str
    shadow: str
    old: str
    key: list[KeyColumn]  # of the primary key, in key order
    columns: list[str]  # insertable (not generated) columns
    forward: dict[str, str]  # vector column -> SQL converting {value} to the target type
    backward: dict[str, str]  # vector column -> SQL converting {value} back to the source type
    vector_columns: list[str]
    index_renames: list[IndexRename]
    vector_indexes: list[ShadowIndex]
    foreign_keys: list[str]  # foreign keys copied NOT VALID, validated after the backfill
    sequences: list[ColumnSequence]  # owned sequences, moved to the new table at finalize
    identities: list[ColumnSequence]  # old identity sequences: the new one continues from each
    # Version 2: the original's index names (renamed to *_pgvector_old at the finalize), and the owner.
    original_indexes: list[str] | None = None
    owner: str | None = None
    # The table's own comment, given back to it at the finalize (the shadow carries the engine's
    # marker until then); version 1 records did not keep it (comment_kept False: left as it was).
    comment: str | None = None
    comment_kept: bool = False
    # Other tables' foreign keys to it, re-pointed at the finalize (NOT VALID, validated right after
    # it) and back by a rollback; absent before 0.2.
    referencing_keys: list[ForeignKeyTo] = Field(default_factory=list)
    # Row-level security on the table: the sync functions then run as its owner, so that mirroring
    # a write the policies allowed is never refused by the same policies on the other copy.
    row_security: bool = False
    # The table's own triggers: made on the migrated table at the finalize and disabled on the old
    # one (the reverse mirror must not fire them twice)
    triggers: list[TriggerCopy] = Field(default_factory=list)
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
    # The functions naming the source's types, created for the target at the finalize, and given
    # back as they were by a rollback after it (absent before 0.2: none were carried)
    functions: list[RecordedStatement] = Field(default_factory=list)
    functions_back: list[RecordedStatement] = Field(default_factory=list, alias="functionsBack")
    # The views over the tables, dropped and created again so they read the tables that have the
    # names after the finalize, and again after a rollback's swap back
    view_drops: list[RecordedStatement] = Field(default_factory=list, alias="viewDrops")
    view_creates: list[RecordedStatement] = Field(default_factory=list, alias="viewCreates")
    # Those views as they were, when a query was rewritten for the target (else empty: view_creates
    # serve a rollback too)
    view_creates_back: list[RecordedStatement] = Field(default_factory=list, alias="viewCreatesBack")

    @property
    def views_back(self) -> list[RecordedStatement]:
        """The views as a rollback after the finalize creates them again, over the pgvector tables."""
        return self.view_creates_back or self.view_creates

    functions_validated: list[RecordedStatement] = Field(default_factory=list, alias="functionsValidated")
    # The materialized views over the tables, made again over the migrated tables before the old
    # ones go (absent before 0.3: Parallel refused them)
    materialized_moves: list[RecordedStatement] = Field(default_factory=list, alias="materializedMoves")


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


class OldTablesDropped(Record):
    """Recorded when a Parallel migration's old tables were dropped after keepOldFor."""


def shadows_recorded(recorded: Journal) -> ShadowRecord | None:
    """The shadows' record, once they were made."""
    return recorded.get(PREPARED, ShadowRecord)


def backfill_recorded(recorded: Journal) -> BackfillRecord | None:
    """The backfill's cursors, once a batch committed."""
    return recorded.get(BACKFILL, BackfillRecord)
