"""InPlace's journal record when it converts in batches: the approved batches, and how many committed.

Read and written through the engine's journal (engine/records.py: the schema version, the event
names); the shape is this strategy's own.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ...api import TableVerification
from ...engine.records import IN_PLACE_BATCHES, Journal, RecordedStatement, SwapRecord, TableName


class RecordedBatch(BaseModel):
    """One approved batch: its tables and its statements, as planned."""

    tables: list[TableName]
    statements: list[RecordedStatement]


class BatchesRecord(SwapRecord):
    """Written in the first batch's transaction and again in each batch's, until the last writes the swap's."""

    batches: list[RecordedBatch]
    committed: int = 0
    # Each committed batch's tables: rows and checksums before and after, under that batch's lock
    checksums: list[TableVerification] = Field(default_factory=list)
    # The catalog objects the committed batches changed as planned, all told
    catalog_planned: int = Field(0, alias="catalogPlanned")


def batches_recorded(recorded: Journal) -> BatchesRecord | None:
    """The batches' record, once the first batch committed."""
    return recorded.get(IN_PLACE_BATCHES, BatchesRecord)
