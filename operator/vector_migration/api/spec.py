"""The spec as a whole: its sections, the rules across them, and what may change once the swap started."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from ..vocabulary import (
    Approval,
    Strategy,
)
from .rules import SPEC_RULES, broken_rule, cel_rules
from .sections import (
    BackupSpec,
    ColumnType,
    CutoverSpec,
    DatabaseSpec,
    DriftCheckSpec,
    IndexesSpec,
    InPlaceSpec,
    ParallelSpec,
    PostMigrationSpec,
    RebuildSpec,
    ReindexSpec,
    ReplicateSpec,
    RollbackSpec,
    SourceSpec,
    TableSelection,
    TargetSpec,
    VerifySpec,
    each_column_once,
)
from .values import (
    _PG_DURATION,
    ApiModel,
    PgSettingDuration,
)


class VectorMigrationSpec(ApiModel):
    """What the user asks for."""

    # The API server evaluates these rules against the schema's default ({}) too, where nothing is
    # defaulted inside it yet: a rule reading a field without has() made it refuse the whole CRD
    # ("no such key: strategy"), which only a real kube-apiserver showed.
    model_config = ConfigDict(json_schema_extra=cel_rules(SPEC_RULES))

    database: DatabaseSpec = Field(default_factory=DatabaseSpec)
    """How to reach the database."""
    strategy: Strategy = Strategy.IN_PLACE
    """InPlace (convert where the rows are), Rebuild (rewrite each table), Parallel (shadow tables, a lock of
    milliseconds) or Replicate (a new database by logical replication, then a switchover)."""
    source: SourceSpec = Field(default_factory=SourceSpec)
    """The extension being migrated away from."""
    target: TargetSpec = Field(default_factory=TargetSpec)
    """The extension being migrated to."""
    # Bounded lists and strings keep the CRD's CEL rules within the API server's cost budget.
    tables: list[TableSelection] = Field(default_factory=list, max_length=1000)
    """The tables to migrate; empty: every table with a vector column. InPlace needs every table of a column's
    type, and refuses a subset that would leave one behind."""
    backup: BackupSpec = Field(default_factory=BackupSpec)
    """The dump taken before the swap, and where its Job runs."""
    approval: Approval = Approval.AUTOMATIC
    """Automatic, or Manual: the migration waits after the checklist until a person approves the plan's hash
    (kubectl vmig approve)."""
    dry_run: bool = False
    """Run the checklist and publish the plan, changing nothing; the resource becomes Ready with reason DryRun."""
    lock_timeout: Annotated[PgSettingDuration, _PG_DURATION] = "5s"
    """How long the swap waits for its table locks before it gives up and retries (PostgreSQL's lock_timeout
    spelling: 5s, 500ms, 1min)."""
    statement_timeout: Annotated[PgSettingDuration, _PG_DURATION] = "6h"
    """The longest any one statement of the migration may run (PostgreSQL's statement_timeout spelling: 6h, 30min)."""
    reindex: ReindexSpec = Field(default_factory=ReindexSpec)
    """How the target's indexes are built."""
    verify: VerifySpec = Field(default_factory=VerifySpec)
    """What 'verified' means: recall and latency against the pgvector baseline."""
    rollback: RollbackSpec = Field(default_factory=RollbackSpec)
    """What happens when a phase after the swap fails."""
    in_place: InPlaceSpec = Field(default_factory=InPlaceSpec)
    """Strategy InPlace's transactions: one, or a batch of tables each."""
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)
    """Strategy Parallel's backfill pace and how long the replaced tables are kept."""
    replicate: ReplicateSpec = Field(default_factory=ReplicateSpec)
    """Strategy Replicate's new database and what happens to the old one."""
    rebuild: RebuildSpec = Field(default_factory=RebuildSpec)
    """Strategy Rebuild's options (columnTypes' older spelling)."""
    # Columns whose target type is not the one of the same kind (halfvec widened into a 32-bit vector
    # type, say); only types that hold every source value exactly are accepted. Every strategy.
    column_types: list[ColumnType] = Field(default_factory=list, max_length=1000)
    """Columns whose target type is not the one of the same kind (halfvec widened into a 32-bit vector type, say);
    only types that hold every source value exactly are accepted. Every strategy."""
    indexes: IndexesSpec = Field(default_factory=IndexesSpec)
    """What to do with indexes the target has no counterpart for."""
    drift_check: DriftCheckSpec = Field(default_factory=DriftCheckSpec)
    """How often a succeeded migration's database is checked again."""
    cutover: CutoverSpec = Field(default_factory=CutoverSpec)
    """Steps between a verified shadow and the finalize (strategies Parallel and Replicate)."""
    post_migration: PostMigrationSpec = Field(default_factory=PostMigrationSpec)
    """Optional RuVector features applied after a verified migration."""

    @model_validator(mode="after")
    def _rules_across_fields(self) -> VectorMigrationSpec:
        broken = broken_rule(SPEC_RULES, self.model_dump(by_alias=True, mode="json"))
        if broken is not None:
            raise ValueError(broken)
        each_column_once(self.column_types)
        return self

    def requested_column_types(self) -> dict[tuple[str, str, str], str]:
        """(schema, table, column) -> the target type asked for, by columnTypes or its older spelling."""
        return {entry.key(): entry.type for entry in self.column_types} | self.rebuild.requested_types()


# What a person may still change once the swap has started: the approval gate, what to do on a
# failure, and the optional features applied after verify. Everything else describes the migration
# already under way; the CRD rejects a change to it and the engine stops if one slips through.
SPEC_MUTABLE_AFTER_SWAP = frozenset({"approval", "rollback", "postMigration", "cutover", "driftCheck"})


def frozen_spec(spec: VectorMigrationSpec) -> dict[str, Any]:
    """The part of a spec that may not change after the swap started (free-form volume excluded)."""
    document = spec.model_dump(by_alias=True, mode="json")
    frozen = {key: value for key, value in document.items() if key not in SPEC_MUTABLE_AFTER_SWAP}
    frozen["backup"] = {key: value for key, value in frozen["backup"].items() if key != "volume"}
    return frozen
