"""InPlace in batches: each batch of tables converted in a transaction of its own, pgvector dropped with the last.

One transaction over thousands of tables holds a lock per relation at once and runs out of
PostgreSQL's lock table (issue "Scale"). When the target's names differ from the source's, both
extensions can be installed side by side, so the tables can move a batch at a time: each batch is
the one-transaction conversion (engine.conversion) of its own tables, the first creates the target,
and only the last drops the source. Between batches the application sees some tables on each type.

A batch may hold only what belongs to its own tables: their columns, indexes, carried indexes,
CHECK constraints and defaults. A view or a function can name tables of several batches, so a
database with them is refused by name (it migrates in one transaction, or with Replicate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ...api import VectorMigrationSpec
from ...database.catalog import Blocker, SourceInventory
from ...database.surface import TargetSurface
from ...engine.batching import groups, part_of
from ...engine.conversion import build_plan
from ...engine.plan import MigrationPlan, Statement
from ...vocabulary import Reason, StatementKind

# What the application sees between two batches, said in the plan and the README.
BETWEEN_BATCHES = (
    "between batches the application sees the converted tables on the target's type and the others still on "
    "pgvector's: a query joining tables of two batches, or passing one table's vector to another's, fails until "
    "the last batch commits"
)


@dataclass(frozen=True)
class Batch:
    """One transaction: its tables, its part of the inventory, and its conversion (whose swap it runs)."""

    number: int  # from 0
    tables: tuple[tuple[str, str], ...]
    inventory: SourceInventory
    plan: MigrationPlan


@dataclass(frozen=True)
class BatchedPlan:
    """Every batch's statements, in order; ``conversion`` is the whole migration's (baseline, reindex, verify)."""

    conversion: MigrationPlan
    batches: tuple[Batch, ...]

    @property
    def warnings(self) -> tuple[str, ...]:
        """The conversion's warnings, and what the application sees between batches."""
        return (*self.conversion.warnings, BETWEEN_BATCHES)

    @property
    def statements(self) -> tuple[tuple[Statement, ...], ...]:
        """Each batch's statements, in order."""
        return tuple(batch.plan.swap for batch in self.batches)

    @property
    def plan_hash(self) -> str:
        """A digest of every batch's statements, where each batch ends, and what runs after the last."""
        document = {
            "route": self.conversion.route,
            "batches": [[s.hashed() for s in statements] for statements in self.statements],
            "concurrent": self.conversion.after_commit,
            "surface": self.conversion.surface,
        }
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        return f"sha256:{digest[:16]}"

    def as_document(self) -> dict[str, object]:
        """The plan as data: the conversion's document, with its one transaction replaced by the batches."""
        document = self.conversion.as_document()
        del document["swapTransaction"]
        return {
            **document,
            "planHash": self.plan_hash,
            "batches": [
                {
                    "tables": [f"{schema}.{table}" for schema, table in batch.tables],
                    "transaction": [
                        {"step": s.step.value, "sql": s.sql, **({"runAs": s.run_as} if s.run_as else {})}
                        for s in batch.plan.swap
                    ],
                }
                for batch in self.batches
            ],
            "warnings": list(self.warnings),
        }


def batch_blockers(inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
    """Why this database cannot move in batches: names that collide, or objects spanning tables."""
    blockers = []
    if surface.collides:
        blockers.append(
            Blocker(
                Reason.CANNOT_BATCH,
                f"inPlace.tablesPerBatch needs {surface.extension} installed beside {inventory.source.name}, and their "
                "names collide: the conversion must drop one before it creates the other, in one transaction, so "
                "batches could not keep the application working. Remove inPlace.tablesPerBatch, or use strategy "
                "Replicate",
            )
        )
    spanning = [f"view {v.schema}.{v.name}" for v in inventory.views]
    spanning += [f"function {f.schema}.{f.name}({f.identity})" for f in inventory.functions]
    if spanning:
        blockers.append(
            Blocker(
                Reason.CANNOT_BATCH,
                f"inPlace.tablesPerBatch converts each batch of tables on its own, and {', '.join(spanning[:5])}"
                f"{f' and {len(spanning) - 5} more' if len(spanning) > 5 else ''} name(s) the vector type across "
                "tables: they are carried in one transaction only. Remove inPlace.tablesPerBatch, or use strategy "
                "Replicate",
            )
        )
    return blockers


def split(
    inventory: SourceInventory,
    surface: TargetSurface,
    spec: VectorMigrationSpec,
    *,
    target_schema: str,
    target_installed: bool,
    size: int,
    first: int = 0,
) -> tuple[Batch, ...]:
    """The batches of ``size`` tables, then the source's drop, numbered from ``first``.

    Batches before ``first`` committed, and their tables are no longer in the inventory.

    Each batch is the one-transaction conversion of its tables, and the target is created by batch 0.
    The source is dropped alone by the last, with the database's settings: dropping an extension
    locks each of its members, which would crowd a batch's locks.
    """
    chosen = [*groups(inventory, size), ()]
    batches = []
    for number, tables in enumerate(chosen, start=first):
        last = not tables
        part = part_of(inventory, tables, last=last)
        plan = build_plan(
            part, surface, spec, target_schema=target_schema, target_installed=target_installed or number > 0
        )
        kept = tuple(s for s in plan.swap if _belongs(s, number, last))
        batches.append(Batch(number, tables, part, dataclasses.replace(plan, swap=kept)))
    return tuple(batches)


def _belongs(statement: Statement, number: int, last: bool) -> bool:
    """The target's schema is made by the first batch, and the source dropped by the last."""
    if statement.step is StatementKind.TARGET_SCHEMA:
        return number == 0
    if statement.step is StatementKind.DROP_SOURCE_EXTENSION:
        return last
    return True
