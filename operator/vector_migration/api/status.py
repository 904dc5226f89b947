"""The status a migration reports: its phase, conditions, inventory, verification and each strategy's own."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from ..vocabulary import (
    Phase,
)
from .values import (
    ApiModel,
)


class Condition(ApiModel):
    """A Kubernetes condition."""

    type: Annotated[str, Field(max_length=316)]
    """Ready, Reconciling or Stalled (kstatus), or a phase's own: ChecklistPassed, BackupCompleted,
    ExtensionSwapped, IndexesRebuilt, Verified, RolledBack."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    """One word a person or an alert can act on (docs: each Reason and what to do)."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """What happened, for a person."""
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When status last changed between True, False and Unknown."""
    observed_generation: int | None = None
    """The metadata.generation this condition was written for."""


class ColumnInventory(ApiModel):
    """A vector column and what it becomes."""

    name: str
    """The column."""
    type: str
    """Its type now (for an array column, the element's type)."""
    dims: int | None = None
    """Its dimensions; unset for an undimensioned column."""
    target_type: str | None = None
    """The type it becomes on the target."""
    array: bool | None = None
    """Whether it is an array of vectors."""


class IndexInventory(ApiModel):
    """A vector index: its saved definition and the definition it is rebuilt with."""

    name: str
    """The index."""
    table: str
    """Its table, schema.table."""
    column: str
    """Its vector column."""
    method: str
    """Its access method now (hnsw, ivfflat)."""
    opclass: str
    """Its operator class now (vector_l2_ops, …)."""
    definition: str
    """Its definition now, as pg_get_indexdef prints it."""
    target_definition: str | None = None
    """Its definition on the target, as the plan builds it."""
    handling: str | None = None
    """For an index beyond a plain vector column (an expression, several keys): what the swap does with it."""


class TableInventory(ApiModel):
    """A table holding vector columns."""

    name: str
    """schema.table."""
    rows: int
    """Its rows when the checklist counted them."""
    columns: list[ColumnInventory] = Field(default_factory=list)
    """Its vector columns."""


class DependentInventory(ApiModel):
    """An object that depends on a vector column or on the source extension."""

    kind: str
    """view, materialized view, function, constraint, …"""
    name: str
    """Its qualified name."""
    handling: str
    """What the swap does with it: carried (rewritten for the target), recreated or refused."""


class SettingInventory(ApiModel):
    """A saved pgvector setting and where it is carried."""

    scope: str
    """Where it is stored: the database, a role, or a role in the database."""
    name: str
    """The source's setting (hnsw.ef_search, ivfflat.probes)."""
    value: str
    """Its value."""
    target_name: str | None = None
    """The target's setting it is carried to; unset: left as it is (a warning says so)."""


class Inventory(ApiModel):
    """What the checklist found."""

    server_version: str = ""
    """PostgreSQL's version."""
    source_version: str = ""
    """The source extension's version."""
    target_version: str = ""
    """The target extension's version, as the probe found it."""
    tables: list[TableInventory] = Field(default_factory=list)
    """The tables with vector columns that migrate."""
    indexes: list[IndexInventory] = Field(default_factory=list)
    """Their vector indexes, and any index carried whole."""
    dependents: list[DependentInventory] = Field(default_factory=list)
    """Views, functions and constraints that depend on the columns."""
    settings: list[SettingInventory] = Field(default_factory=list)
    """The source's settings stored for the database or roles."""


class BackupStatus(ApiModel):
    """Where the verified pre-migration dump is."""

    location: str
    """Where the archive is: pvc/<claim>/<file>, or a path for the command line."""
    size_bytes: int
    """The archive's size."""
    sha256: str
    """The archive's sha256, checked again before a restore."""
    verified: bool = False
    """Whether pg_restore read every block of it back."""


class TableVerification(ApiModel):
    """Rows and content checksums of one table, before and after the conversion."""

    name: str
    """schema.table."""
    rows_before: int
    """Rows before the swap."""
    rows_after: int | None = None
    """Rows after it."""
    checksum_before: str
    """The content checksum before the swap (every row's every column)."""
    checksum_after: str | None = None
    """The same after it: equal, or the swap rolled back."""


class LatencyMs(ApiModel):
    """Query latency percentiles in milliseconds."""

    p50: float
    """Median, in milliseconds."""
    p95: float
    """95th percentile, in milliseconds."""
    p99: float
    """99th percentile, in milliseconds."""


class IndexVerification(ApiModel):
    """Recall@k (index against exact search) and latency of one index, before and after."""

    name: str
    """The index."""
    queries: int
    """How many stored vectors served as queries."""
    recall_before: float | None = None
    """recall@k of pgvector's index against exact search, before the swap."""
    recall_after: float | None = None
    """recall@k of the target's index against exact search, after it."""
    latency_before: LatencyMs | None = None
    """Query latency before the swap."""
    latency_after: LatencyMs | None = None
    """Query latency after it."""
    used_by_planner: bool | None = None
    """Whether PostgreSQL's planner uses the index for the distance query (EXPLAIN)."""
    recall_after_interval: list[float] | None = None
    """Recall after the migration is a proportion over queries x k: its 95% Wilson interval."""
    recall_after_first_build: float | None = None
    """When the first build missed the recall bound, the index was built once more: the first figure."""
    relative_latency_before: float | None = None
    """The index's latency divided by a fixed control query's, measured side by side (p95 of the ratio), before:
    load on the machine slows both, so it cancels out."""
    relative_latency_after: float | None = None
    """The same after the migration."""
    latency_rounds: int | None = None
    """How many rounds latency was measured in (verify.maxRounds at most)."""
    recall_verdict: str | None = None
    """Pass, Fail or Inconclusive: recall's interval above, below or across its bound (the baseline less
    maxRecallDrop, or minRecall)."""
    held_out_queries: int | None = None
    """Queries drawn from other rows, measured when the first ones could not decide."""
    relative_latency_interval: list[float | None] | None = None
    """The judged latency ratio's 95% interval (no upper end when too few queries ran to bound it)."""
    latency_verdict: str | None = None
    """Pass within the bound, Fail with the whole interval above it, Inconclusive when the figure is above it but
    the interval reaches below."""


class CatalogCheck(ApiModel):
    """The whole catalog compared before and after the change: what was equal, what changed as planned, what else."""

    equal: int = 0
    """Catalog objects equal before and after."""
    changed_as_planned: int = 0
    """Catalog objects the plan changed, and changed as it said."""
    differences: list[str] = Field(default_factory=list)
    """Every difference the plan does not make ("column public.t.c: acl was [...], is none"); any fails the
    migration with CatalogMismatch."""


class Verification(ApiModel):
    """The numbers that prove the result."""

    k: int = 10
    """Neighbours per query (verify.k)."""
    catalog: CatalogCheck | None = None
    """The whole catalog compared before and after."""
    checksum_mode: str | None = None
    """How vectors were checksummed: binary (sent alike), text (printed alike) or normalized (as parsed floats)."""
    tables: list[TableVerification] = Field(default_factory=list)
    """Each table's rows and checksums, before and after."""
    indexes: list[IndexVerification] = Field(default_factory=list)
    """Each index's recall and latency, before and after."""
    passed: bool | None = None
    """Whether every check passed."""


class ShadowTableStatus(ApiModel):
    """One table of a Parallel migration: its shadow and the backfill's progress."""

    name: str
    """The table being migrated."""
    shadow: str
    """Its shadow table, filled with the target's type."""
    rows_copied: int = 0
    """Rows copied into the shadow so far."""
    rows_total: int = 0
    """Rows to copy."""
    backfilled: bool = False
    """Whether the backfill is done (writes are mirrored throughout)."""


class ParallelStatus(ApiModel):
    """Where a Parallel migration's shadow tables are, and what the finalize did."""

    tables: list[ShadowTableStatus] = Field(default_factory=list)
    """Each table and its shadow."""
    lock_window_seconds: float | None = None
    """How long the finalize blocked writes."""
    old_tables: list[str] = Field(default_factory=list)
    """The replaced pgvector tables, kept in sync until dropOldAfter."""
    drop_old_after: str | None = None
    """When the old tables are dropped (parallel.keepOldFor after the finalize)."""
    old_tables_dropped: bool = False
    """Whether they were."""


class ReplicatedTable(ApiModel):
    """One table of a Replicate migration: its subscription state and the rows on the new database."""

    name: str
    """schema.table."""
    state: str
    """The subscription's table state: copying, catching up, streaming."""
    rows: int | None = None
    """Rows on the new database."""


class ReplicateStatus(ApiModel):
    """Where a Replicate migration's new database is, how far replication is, and what the switchover did."""

    source_database: str
    """The database migrated."""
    target_database: str
    """The new database, with the target extension."""
    old_database: str
    """The old database's name after the switchover."""
    endpoint: str | None = None
    """With replicate.target: the new database's server and name (host:port/database), where the application
    connects after the switchover; unset on the same server."""
    tables: list[ReplicatedTable] = Field(default_factory=list)
    """Each table's replication state."""
    lag_bytes: int | None = None
    """How far the new database is behind, in WAL bytes (alert if it grows: an unconsumed slot keeps WAL)."""
    switchover_seconds: float | None = None
    """How long the switchover blocked writes."""
    switched_over: bool = False
    """Whether the application now reaches the new database."""
    reverse_replication: bool = False
    """Whether the old database follows the new one, so a rollback loses no write."""
    drop_old_after: str | None = None
    """When reverse replication stops (replicate.keepOldFor after the switchover)."""
    replication_stopped: bool = False
    """Whether it has stopped."""
    old_database_dropped: bool = False
    """Whether the old database was dropped (replicate.dropOld)."""


class CutoverStatus(ApiModel):
    """The cutover's current step and the share of reads routed to the new tables."""

    step: int = 0
    """The cutover step in progress (an index into spec.cutover.steps)."""
    weight: int = 0
    """The percentage of reads routed to the new tables."""
    step_started_at: str | None = None
    """When the step began (a pause's duration counts from it)."""


class VectorMigrationStatus(ApiModel):
    """What the engine observed and did."""

    phase: Phase = Phase.PENDING
    """Where the migration is: Pending, Checklist, Backup, Swap, Reindex, Verify, Succeeded, Failed, RollingBack,
    RolledBack (and Parallel's and Replicate's own)."""
    # A list keyed by type (kubectl and server-side apply merge conditions by it, as for a Deployment's).
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready, Reconciling and Stalled (kstatus), and each phase's condition."""
    observed_generation: int | None = None
    """The metadata.generation the operator last acted on."""
    plan_hash: str | None = None
    """The hash of the plan: every statement that changes the database. approval: Manual waits for it
    (ruvector.dev/approve)."""
    inventory: Inventory | None = None
    """What the checklist found."""
    backup: BackupStatus | None = None
    """The verified dump taken before the swap."""
    verification: Verification | None = None
    """The numbers that prove the result."""
    parallel: ParallelStatus | None = None
    """Strategy Parallel's shadow tables and finalize."""
    replicate: ReplicateStatus | None = None
    """Strategy Replicate's new database, replication and switchover."""
    cutover: CutoverStatus | None = None
    """The cutover's step and weight."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds spent in each phase, and the write-blocking window (writeBlockedSeconds)."""
    warnings: list[str] = Field(default_factory=list)
    """Everything a person should know that did not stop the migration; each is also a Warning event."""
    message: str = ""
    """The last thing that happened, for a person."""
