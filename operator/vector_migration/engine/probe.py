"""What the checklist measured of one index, and where verify measures it again."""

from __future__ import annotations

from dataclasses import dataclass

from ..database.measure import IndexMeasurement, IndexTarget


@dataclass
class Probe:
    """One index's measurement inputs: where to query after the swap, with which vectors."""

    index: str
    table_rows: int
    after: IndexTarget
    queries: list[str]
    baseline: IndexMeasurement | None
