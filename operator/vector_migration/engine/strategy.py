"""A strategy is a unit: its phases, its checks, its plan as data, what it leaves to do after success.

Like pgroll's operations, each strategy (InPlace, Rebuild, Parallel) implements one protocol in
a module of its own under :mod:`vector_migration.strategies`, and registers itself under its
:class:`~vector_migration.vocabulary.Strategy` value. The runner, the checklist and the operator
look the strategy up here and call it; none of them branches on a strategy's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ..api import VectorMigrationSpec, VectorMigrationStatus
from ..database.catalog import Blocker, SourceInventory
from ..database.locks import (
    CATALOG_AND_TARGET_LOCKS,
    REPLICATE_NEEDS_FEWER,
    extension_members,
    lock_blockers,
    lock_table,
    relations_locked,
)
from ..database.sql import ConnectionParams
from ..database.surface import TargetSurface
from ..vocabulary import Phase, Strategy
from .context import Migration, PhaseFunction
from .continuation import already_done
from .conversion import build_plan
from .outcomes import Outcome
from .plan import MigrationPlan, StrategyPlan
from .records import Journal


@dataclass(frozen=True)
class PlanInputs:
    """What the checklist learned that a plan is derived from (the spec comes with the migration)."""

    inventory: SourceInventory
    surface: TargetSurface
    target_schema: str
    target_installed: bool
    copy_format: str  # Rebuild's COPY format, fixed at the checklist with the plan


class Leftovers(Protocol):
    """What a succeeded migration keeps until it is due (Parallel's old tables, Replicate's old database)."""

    def due_in(self, status: VectorMigrationStatus) -> float | None:
        """Seconds until it may go (0: now), None when nothing is kept."""

    async def clean_up(self, m: Migration) -> str:
        """Remove it once due; what was done."""

    def kept_for(self, remaining: float) -> str:
        """What stays, and for how long, while it is not yet due."""


class DatabaseMove(Protocol):
    """A strategy that moves the application to another database (Replicate): where it is, and its fence."""

    async def recover_connection(self, m: Migration) -> bool:
        """The database refuses connections: undo what of this strategy closed it; whether it did."""

    def migrated_database(self, m: Migration, recorded: Journal) -> ConnectionParams | None:
        """Where a succeeded migration left the migrated tables, when not in the control session's database."""


class MigrationStrategy(Protocol):
    """One way of moving the tables to the target: what every strategy has, and two capabilities some have."""

    @property
    def kind(self) -> Strategy:
        """The spec value that selects this strategy."""

    @property
    def phases(self) -> Mapping[Phase, PhaseFunction]:
        """Its phase table: the function run in each phase."""

    @property
    def undo_on_failure(self) -> frozenset[Phase]:
        """Phases whose failure leaves the database changed: rollback.onFailure decides what happens."""

    @property
    def abortable(self) -> frozenset[Phase]:
        """Phases before success in which a person's rollback request is honoured at once."""

    async def check(self, m: Migration, inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
        """What keeps this strategy from moving these tables, each with what to do about it."""

    def resume(self, m: Migration, recorded: Journal) -> Outcome | None:
        """Where a run that finds its journal further along continues (None: from the checklist's plan)."""

    def convert(self, m: Migration, inputs: PlanInputs) -> MigrationPlan:
        """How every column and index maps to the target (PlanningError when one cannot)."""

    async def plan(self, m: Migration, inputs: PlanInputs, conversion: MigrationPlan) -> StrategyPlan:
        """Every statement the strategy will run, as data: hashed, published, approved, then run."""

    def kept_after_failure(self, phase: Phase) -> str:
        """What a failure in ``phase`` left in place, when rollback.onFailure is Manual."""

    @property
    def leftovers(self) -> Leftovers | None:
        """What a succeeded migration keeps until it is due; None when it keeps nothing."""

    @property
    def database_move(self) -> DatabaseMove | None:
        """How it follows the application to another database; None when the tables stay where they are."""


class ConvertingStrategy:
    """What InPlace and Rebuild share: one transaction converts the tables, nothing is left behind."""

    kind: Strategy
    undo_on_failure = frozenset({Phase.REINDEX, Phase.VERIFY})
    # A verification held for a decision: a person may choose the rollback.
    abortable: frozenset[Phase] = frozenset({Phase.VERIFY})

    # Whether the conversion rewrites the tables' storage through COPY (Rebuild) or converts in place.
    refills_storage = False

    def resume(self, m: Migration, recorded: Journal) -> Outcome | None:
        """After a committed swap: the reindex, with the facts the swap recorded."""
        return already_done(m, recorded)

    def convert(self, m: Migration, inputs: PlanInputs) -> MigrationPlan:
        """The one-transaction conversion of the spec's columns."""
        return build_plan(
            inputs.inventory,
            inputs.surface,
            m.spec,
            target_schema=inputs.target_schema,
            target_installed=inputs.target_installed,
            refill=inputs.copy_format if self.refills_storage else None,
        )

    async def plan(self, m: Migration, inputs: PlanInputs, conversion: MigrationPlan) -> StrategyPlan:
        """The conversion is the plan: its statements are the swap's."""
        return conversion

    async def check(self, m: Migration, inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
        """The swap's locks: every table with its relations, and every object of the source extension it drops."""
        return await swap_lock_blockers(m, inventory)

    def kept_after_failure(self, phase: Phase) -> str:
        """After the swap committed, the data is on the target."""
        return "The migrated data is intact on the target"

    leftovers: Leftovers | None = None  # nothing is kept after success
    database_move: DatabaseMove | None = None  # the tables are converted where they are


def leftovers_due_in(strategy: MigrationStrategy, status: VectorMigrationStatus) -> float | None:
    """Seconds until a succeeded migration's leftovers may go (0: now), None when it keeps none."""
    return strategy.leftovers.due_in(status) if strategy.leftovers is not None else None


_REGISTRY: dict[Strategy, MigrationStrategy] = {}


def register(strategy: MigrationStrategy) -> MigrationStrategy:
    """Make a strategy the one its spec value selects."""
    _REGISTRY[strategy.kind] = strategy
    return strategy


class UnknownStrategy(LookupError):
    """No strategy is registered for a spec value (vector_migration.strategies was not imported)."""


async def replan(m: Migration, inputs: PlanInputs) -> StrategyPlan:
    """The plan the facts give now (the swap compares its hash with the approved one)."""
    strategy = strategy_of(m.spec)
    return await strategy.plan(m, inputs, strategy.convert(m, inputs))


def strategy_of(spec: VectorMigrationSpec) -> MigrationStrategy:
    """The strategy a spec selects."""
    try:
        return _REGISTRY[spec.strategy]
    except KeyError:
        raise UnknownStrategy(
            f"no strategy is registered for {spec.strategy.value} (import vector_migration.strategies)"
        ) from None


async def swap_lock_blockers(
    m: Migration, inventory: SourceInventory, instead: str = REPLICATE_NEEDS_FEWER
) -> list[Blocker]:
    """Whether the one-transaction swap's locks fit the server's lock table (database.locks); else ``instead``."""
    locks = await relations_locked(m.session, inventory.relations()) + CATALOG_AND_TARGET_LOCKS
    locks += await extension_members(m.session, inventory.source.name)
    table = await lock_table(m.session)
    return lock_blockers(table, locks, "the swap's one transaction", instead)
