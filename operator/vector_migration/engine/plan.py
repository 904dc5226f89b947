"""A plan as data: the statements a strategy will run, in order, hashed so that a person approves exactly them.

A strategy's ``plan()`` returns a :class:`StrategyPlan`; InPlace and Rebuild return the
:class:`MigrationPlan` of the one-transaction conversion (see :mod:`.conversion`), Parallel
returns its own, which wraps that conversion's facts and adds its shadow, backfill and finalize
statements. The runner and the operator only ever use the protocol: the hash, the document
published for approval, and the warnings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ..database.catalog import SavedIndex, SavedSetting, VectorColumn
from ..database.sql import qualify, quote_ident, quote_literal
from ..database.target_objects import TargetOpclass, TargetType
from ..vocabulary import Reason, StatementKind


@dataclass(frozen=True)
class Statement:
    """One SQL statement of the plan, with the step it belongs to."""

    step: StatementKind
    sql: str
    # (schema, table) of a Rebuild COPY step, which the engine runs through asyncpg's COPY API
    table: tuple[str, str] | None = None
    # The role whose code the statement may run (a table's CHECK constraints, generated columns,
    # index expressions and predicates, TRUNCATE triggers; a materialized view's query): it runs as
    # that role, in a SECURITY DEFINER function the role's code cannot SET ROLE out of.
    run_as: str | None = None
    # What the statement's bind parameters ($1, $2 ...) are, when their values are read at run time
    # (a sequence's last value at the switchover): the plan shows the SQL as it runs, and this.
    binds: str | None = None

    def hashed(self) -> list[str]:
        """What the plan hash covers of this statement (the role only when it switches, the binds when any)."""
        return [self.step, self.sql, *([self.run_as] if self.run_as else []), *([self.binds] if self.binds else [])]


@dataclass(frozen=True)
class ColumnConversion:
    """How one column's values reach the target type."""

    column: VectorColumn
    target_type: TargetType
    target_type_sql: str
    cast_path: str  # "direct", "real[]" or "text": the cheapest route found in pg_cast


@dataclass(frozen=True)
class IndexRebuild:
    """A saved index and the definition it is rebuilt with on the target."""

    saved: SavedIndex
    method: str
    opclass: TargetOpclass
    definition: str
    concurrent: bool
    tail: str = ""  # WITH (...), TABLESPACE and WHERE clauses, as in the definition
    predicate: str | None = None  # the partial index's predicate, in the target's names

    def definition_on(self, schema: str, table: str, name: str, *, concurrently: bool) -> str:
        """The same index on another table (a Parallel migration's shadow) under another name."""
        return (
            f"CREATE INDEX{' CONCURRENTLY' if concurrently else ''} {quote_ident(name)} "
            f"ON {'ONLY ' if self.saved.partitioned else ''}{qualify(schema, table)} USING {quote_ident(self.method)} "
            f"({quote_ident(self.saved.column)} {qualify(self.opclass.schema, self.opclass.name)}){self.tail}"
        )


@dataclass(frozen=True)
class SettingCarry:
    """A saved pgvector setting and the target setting it is written to (if any)."""

    saved: SavedSetting
    target_name: str | None
    statement: str | None


@dataclass(frozen=True)
class Rewritten:
    """Objects whose definitions were rewritten for the target, as data (a Parallel shadow makes its own)."""

    defaults: tuple[tuple[str, str, str, str], ...] = ()  # (schema, table, column, expression)
    checks: tuple[tuple[str, str, str, str], ...] = ()  # (schema, table, constraint, definition)
    indexes: tuple[tuple[str, str, str, str], ...] = ()  # (schema, table, index, CREATE INDEX)
    # (schema, table, index, its definition) dropped by indexes.unmappable: Drop
    dropped: tuple[tuple[str, str, str, str], ...] = ()
    views: tuple[tuple[str, str, str], ...] = ()  # (schema, view, query) of views naming the source's names

    @property
    def index_names(self) -> frozenset[str]:
        """The indexes rewritten or dropped: never copied as they are."""
        return frozenset(name for _, _, name, _ in (*self.indexes, *self.dropped))


@dataclass(frozen=True)
class CarriedFunctions:
    """Functions naming the source's types: how they are dropped, created for the target, and given back."""

    drops: tuple[Statement, ...]
    forward: tuple[Statement, ...]  # created again with the target's types, owner, grants, comment
    back: tuple[Statement, ...]  # the target's versions dropped, the originals created as they were
    # each carried body checked by its language's validator, under the search_path it will run with,
    # once everything it may read is back: a body that no longer resolves fails the transaction
    validate: tuple[Statement, ...] = ()


class CarriedBuild(NamedTuple):
    """A carried index built with CREATE INDEX CONCURRENTLY after the swap commits."""

    schema: str
    name: str
    table: str  # schema.table
    method: str
    sql: str
    comment: str | None = None  # its COMMENT ON INDEX, given again once it is built


def index_comment(schema: str, name: str, comment: str | None) -> list[Statement]:
    """An index's comment given again after it is built on the target (none when it had none)."""
    if comment is None:
        return []
    sql = f"COMMENT ON INDEX {qualify(schema, name)} IS {quote_literal(comment)}"
    return [Statement(StatementKind.INDEX_COMMENT, sql)]


# Why an index of a partitioned table's tree is built inside the swap whatever reindex.mode says.
IN_A_TREE = (
    "it is in a partitioned table's tree (PostgreSQL builds no partitioned index concurrently, and a "
    "partition's index is attached to it in the same transaction)"
)


def parents_first(rebuilds: list[IndexRebuild]) -> list[IndexRebuild]:
    """The rebuilds in their order, except that an index attached to another comes after that one."""
    by_name = {(r.saved.schema, r.saved.name): r for r in rebuilds}

    def depth(rebuild: IndexRebuild) -> int:
        parent = by_name.get(rebuild.saved.attached_to) if rebuild.saved.attached_to else None
        return 0 if parent is None else 1 + depth(parent)

    return sorted(rebuilds, key=depth)  # stable: the inventory's order within each depth


def attach_indexes(indexes: Iterable[SavedIndex]) -> list[Statement]:
    """Each partition's index attached where it was, once every index of the tree is built.

    A partitioned index becomes valid once all of its partitions' are attached, in any order.
    """
    return [
        Statement(
            StatementKind.ATTACH_INDEX,
            f"ALTER INDEX {qualify(*index.attached_to)} ATTACH PARTITION {qualify(index.schema, index.name)}",
        )
        for index in indexes
        if index.attached_to is not None
    ]


@dataclass(frozen=True)
class MigrationPlan:
    """Everything the swap and the reindex will do, in order."""

    route: str  # "direct" (both extensions installed at once) or "intermediate" (names collide)
    swap: tuple[Statement, ...]
    conversions: tuple[ColumnConversion, ...]
    rebuilds: tuple[IndexRebuild, ...]
    settings: tuple[SettingCarry, ...]
    surface: dict[str, object]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # The functions that name the source's types: dropped and created for the target (part of the
    # swap above), and the statements that give them back as they were (Parallel's rollback)
    functions: CarriedFunctions = field(default_factory=lambda: CarriedFunctions((), (), ()))
    rewritten: Rewritten = field(default_factory=Rewritten)
    # Carried indexes (expressions, several keys, a materialized view's) built with CREATE INDEX
    # CONCURRENTLY after the swap commits, in Concurrent mode: (schema, index, schema.table, method, SQL)
    carried_concurrent: tuple[CarriedBuild, ...] = ()

    @property
    def dropped_indexes(self) -> tuple[str, ...]:
        """Definitions of the indexes dropped by indexes.unmappable: Drop (their DROP is in the swap)."""
        return tuple(definition for _, _, _, definition in self.rewritten.dropped)

    @property
    def conversion(self) -> MigrationPlan:
        """The plan itself: InPlace and Rebuild run the conversion as it is."""
        return self

    @property
    def concurrent_rebuilds(self) -> tuple[IndexRebuild, ...]:
        """Indexes built with CREATE INDEX CONCURRENTLY after the swap commits."""
        return tuple(r for r in self.rebuilds if r.concurrent)

    @property
    def after_commit(self) -> list[str]:
        """The CREATE INDEX CONCURRENTLY statements run after the swap commits, in order."""
        built = [(r.definition, r.saved.schema, r.saved.name, r.saved.comment) for r in self.concurrent_rebuilds]
        built += [(c.sql, c.schema, c.name, c.comment) for c in self.carried_concurrent]
        return [
            sql
            for definition, schema, name, comment in built
            for sql in [definition, *(s.sql for s in index_comment(schema, name, comment))]
        ]

    @property
    def plan_hash(self) -> str:
        """A stable digest of what will run: the same database and spec give the same hash."""
        document = {
            "route": self.route,
            "swap": [s.hashed() for s in self.swap],
            "concurrent": self.after_commit,
            "surface": self.surface,
        }
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        return f"sha256:{digest[:16]}"

    def as_document(self) -> dict[str, object]:
        """The plan as data, for `vector-migration plan` and the approval ConfigMap."""
        return {
            "planHash": self.plan_hash,
            "route": self.route,
            "target": self.surface,
            "swapTransaction": [
                {"step": s.step.value, "sql": s.sql, **({"runAs": s.run_as} if s.run_as else {})} for s in self.swap
            ],
            "afterCommit": [
                {
                    "step": (
                        StatementKind.INDEX_COMMENT
                        if sql.startswith("COMMENT ")
                        else StatementKind.REINDEX_CONCURRENTLY
                    ).value,
                    "sql": sql,
                }
                for sql in self.after_commit
            ],
            "warnings": list(self.warnings),
            **({"droppedIndexes": list(self.dropped_indexes)} if self.dropped_indexes else {}),
        }


# The stages of a plan document, in the order they run, as a person reads them.
STAGES = {
    "swapTransaction": "In one transaction",
    "afterCommit": "After commit",
    "prepareTransaction": "Prepare (one transaction)",
    "backfill": "Backfill (one batch per transaction, repeated)",
    "afterBackfill": "After the backfill",
    "finalizeTransaction": "Finalize (one transaction)",
    "afterKeepOldFor": "After parallel.keepOldFor",
    "prepare": "Prepare the new database (the source is not touched)",
    "afterCopy": "On the new database, once its rows are copied",
    "switchover": "Switchover (writes blocked on the source)",
}


def stages(document: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each stage of a plan document with its statements, in the order they run (InPlace's batches first)."""
    batches = document.get("batches") or []
    found = [
        (f"Batch {number} of {len(batches)} (one transaction): {', '.join(batch['tables']) or 'the source dropped'}",
         batch["transaction"])
        for number, batch in enumerate(batches, start=1)
    ]  # fmt: skip
    found += [(title, document[stage]) for stage, title in STAGES.items() if document.get(stage)]
    return found


class PlanningError(ValueError):
    """Facts that no plan can serve; carries the reason the checklist reports."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


ColumnKey = tuple[str, str, str]  # (schema, table, column)


def column_key(column: VectorColumn) -> ColumnKey:
    """How the spec and the saved inventory name a column."""
    return column.schema, column.table, column.column


class StrategyPlan(Protocol):
    """What every strategy's plan offers: its hash, its document, its warnings, and the conversion facts."""

    @property
    def plan_hash(self) -> str:
        """A stable digest of exactly the statements that will run."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """What a person should know before approving."""

    @property
    def conversion(self) -> MigrationPlan:
        """How each column and index maps to the target (the baseline and the inventory read it)."""

    def as_document(self) -> dict[str, object]:
        """The plan as data, for `vector-migration plan` and the `<name>-plan` ConfigMap."""
