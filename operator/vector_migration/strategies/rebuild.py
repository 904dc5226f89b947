"""Rebuild: InPlace's one transaction, with each table exported, emptied and refilled through COPY.

The table keeps its identity (grants, owner, triggers, policies, the foreign keys it holds) while
its storage is written afresh. The COPY statements are part of the plan (engine.conversion with
``refill``); the files live in a scratch directory for the length of the transaction
(database.table_copy), and the checklist refuses tables COPY cannot carry, or too little space.
"""

from __future__ import annotations

from ..database import table_copy
from ..database.catalog import Blocker, SourceInventory
from ..database.surface import TargetSurface
from ..engine.context import Migration
from ..engine.strategy import ConvertingStrategy
from ..vocabulary import Strategy
from .in_place import CONVERTING_PHASES


class Rebuild(ConvertingStrategy):
    """Convert the columns of emptied tables and refill them, in one transaction."""

    kind = Strategy.REBUILD
    phases = CONVERTING_PHASES
    refills_storage = True

    async def check(self, m: Migration, inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
        """Tables COPY cannot empty and refill whole, too little scratch space for the exports, and the swap's locks."""
        copied = await table_copy.check_tables(m.session, inventory, m.scratch, m.facts.checksum_mode)
        return [*copied, *await super().check(m, inventory, surface)]
