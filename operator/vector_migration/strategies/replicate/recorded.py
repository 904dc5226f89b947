"""Replicate's journal records: the new database and its channels, and the switchover.

Read and written through the engine's journal (engine/records.py: the schema version, the event
names, reading older rows); the shapes are this strategy's own.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...api import TableVerification
from ...engine.records import (
    REPLICA_PREPARED,
    REPLICA_SWITCHED,
    Journal,
    Record,
    RecordedStatement,
    SwapRecord,
    TableName,
)


class ReplicaRecord(SwapRecord):
    """Recorded when a Replicate migration's new database was subscribed (strategy Replicate)."""

    source_database: str = Field(alias="sourceDatabase")
    target_database: str = Field(alias="targetDatabase")
    old_database: str = Field(alias="oldDatabase")
    # The publication, slot and subscription carrying rows to the new database, and those carrying
    # them back to the old one after the switchover (each the same name for all three objects).
    forward: str
    back: str
    published: list[TableName] = Field(default_factory=list)  # every replicated table
    # replicate.target: the new database is on another server, whose endpoint (host:port/database)
    # the application moves to; the source is fenced at the switchover and given back this
    # connection limit when it is live again.
    endpoint: str | None = None
    source_connection_limit: int = Field(default=-1, alias="sourceConnectionLimit")
    # The conversion's other index builds (carried indexes), run after the copy
    builds: list[RecordedStatement] = Field(default_factory=list)
    # What the approved plan changes of the source's catalog (catalog_state.Expected.as_document): the
    # switchover compares the two databases with it at its cut. Absent before 0.3: not compared.
    catalog: dict[str, Any] | None = None


class SwitchRecord(Record):
    """Recorded in the new database once the switchover renamed the databases."""

    drop_old_after: str = Field(alias="dropOldAfter")
    switchover_seconds: float = Field(alias="switchoverSeconds")
    tables: list[TableVerification] = Field(default_factory=list)  # both sides' checksums, under the block


def replica_recorded(recorded: Journal) -> ReplicaRecord | None:
    """The new database's record, once it was subscribed."""
    return recorded.get(REPLICA_PREPARED, ReplicaRecord)


def switch_recorded(recorded: Journal) -> SwitchRecord | None:
    """The switchover's record, once the databases' names turned."""
    return recorded.get(REPLICA_SWITCHED, SwitchRecord)
