"""Tables in batches: the tables of each batch, and the part of the inventory that is theirs alone.

InPlace's batches (strategies/in_place) and the rollback that converts them back (phases/rollback)
cut the inventory the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..database.catalog import SourceInventory


def groups(inventory: SourceInventory, size: int) -> list[tuple[tuple[str, str], ...]]:
    """The tables of each batch, in the inventory's stable order."""
    tables = inventory.tables()
    return [tuple(tables[start : start + size]) for start in range(0, len(tables), size)]


def part_of(inventory: SourceInventory, tables: Sequence[tuple[str, str]], *, last: bool) -> SourceInventory:
    """The inventory of these tables alone; the database's settings go with the last batch."""
    chosen = set(tables)
    return dataclasses.replace(
        inventory,
        columns=[c for c in inventory.columns if (c.schema, c.table) in chosen],
        indexes=[i for i in inventory.indexes if (i.table_schema, i.table) in chosen],
        carried_indexes=[i for i in inventory.carried_indexes if (i.table_schema, i.table) in chosen],
        constraints=[c for c in inventory.constraints if (c.schema, c.table) in chosen],
        defaults=[d for d in inventory.defaults if (d.schema, d.table) in chosen],
        referencing_keys=[k for k in inventory.referencing_keys if k.referenced in chosen],
        partition_columns=[p for p in inventory.partition_columns if p.root in chosen],
        row_counts={key: rows for key, rows in inventory.row_counts.items() if key in chosen},
        settings=inventory.settings if last else [],
    )
