"""The sections of a VectorMigration's spec: where the database is, which tables, and how each phase runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ..vocabulary import (
    BackupScope,
    LatencyEnforcement,
    ReindexMode,
    RollbackPolicy,
    UnmappableIndexes,
)
from .rules import REPLICATE_RULES, broken_rule, cel_rules
from .values import (
    _EXTENSION_NAME,
    _EXTENSION_VERSION,
    _LONG_DURATION,
    _MEMORY,
    _PARAMETER_NAME,
    _PARAMETER_VALUE,
    _PG_DURATION,
    _SETTING_LENGTH,
    PG_INT_MAX,
    ApiModel,
    Duration,
    _at_most_kb,
    duration_ms,
    split_qualified_name,
)


class SecretRef(ApiModel):
    """A Secret in the resource's namespace holding the connection (CloudNativePG's app-secret layout)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Secret's name, in the VectorMigration's namespace."""


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Secret's name, in the VectorMigration's namespace."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = "ca.crt"
    """The key holding the PEM certificate (ca.crt by default)."""


class DatabaseSpec(ApiModel):
    """How to reach the database. The command line takes a URL instead of the Secret."""

    secret_ref: SecretRef | None = None
    """The Secret with the application's login: a `uri` key, or host, port, dbname, user and password keys
    (CloudNativePG's <cluster>-app Secret has both)."""
    # A second login (CloudNativePG's <cluster>-superuser Secret) for the few statements the
    # application's role cannot run: CREATE/DROP EXTENSION of an extension that is not trusted,
    # and a restore of the backup. The migration's session logs in with it and acts as
    # secretRef's user (SET ROLE) for everything else, so the swap stays one transaction.
    admin_secret_ref: SecretRef | None = None
    """A second login (CloudNativePG's <cluster>-superuser Secret, with enableSuperuserAccess) for the statements
    the application's role cannot run: CREATE/DROP EXTENSION of an extension that needs a superuser, and a restore
    of the backup. The session logs in with it and acts as secretRef's user for everything else."""
    ssl_mode: SslMode | None = None
    """libpq's sslmode for every session and backup Job: disable, allow, prefer, require, verify-ca or verify-full.
    Unset: the Secret's, else prefer."""
    # The CA that signed the server's certificate, for sslMode verify-ca/verify-full: a Secret key
    # (CloudNativePG's <cluster>-ca Secret holds ca.crt). Unset: a ca.crt key in secretRef's Secret,
    # if it has one. The operator's sessions and the backup Jobs trust it alike.
    ca_secret_ref: SecretKeyRef | None = None
    """The CA that signed the server's certificate, for verify-ca and verify-full (CloudNativePG's <cluster>-ca
    Secret holds ca.crt). Unset: a ca.crt key in secretRef's Secret, if it has one."""


class SourceSpec(ApiModel):
    """The extension being migrated away from."""

    extension: Annotated[str, Field(min_length=1, max_length=63, pattern=_EXTENSION_NAME)] = "vector"
    """The extension the vector columns use now (vector: pgvector)."""


class TargetSpec(ApiModel):
    """The extension being migrated to; schema defaults to the source extension's schema."""

    extension: Annotated[str, Field(min_length=1, max_length=63, pattern=_EXTENSION_NAME)] = "ruvector"
    """The extension to move them to (ruvector). Its types, access methods, operator classes and settings are
    discovered, not assumed."""
    version: Annotated[str | None, Field(max_length=63, pattern=_EXTENSION_VERSION)] = None
    """The target extension's version for CREATE EXTENSION … VERSION; unset: its default version."""
    target_schema: Annotated[str | None, Field(alias="schema", min_length=1, max_length=63)] = None
    """The schema the target extension is created in; unset: the source extension's schema."""


class TableSelection(ApiModel):
    """One table, as schema.table (schema defaults to public), and optionally some of its columns."""

    name: Annotated[str, Field(min_length=1, max_length=260)]
    """'table' or 'schema.table' (schema defaults to public); double-quote a part that holds a dot."""
    columns: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(default_factory=list, max_length=100)
    """Some of its vector columns only; empty: all of them."""

    def qualified(self) -> tuple[str, str]:
        """Split the name into (schema, table); a quoted part may contain dots."""
        parts = split_qualified_name(self.name)
        if len(parts) == 1:
            return "public", parts[0]
        if len(parts) == 2:
            return parts[0], parts[1]
        raise ValueError(f"table name {self.name!r} must be 'table' or 'schema.table'")

    @field_validator("name")
    @classmethod
    def _name_parses(cls, value: str) -> str:
        return table_name(value)


def table_name(value: str) -> str:
    """A table name as the spec writes it: 'table' or 'schema.table', refused otherwise."""
    parts = split_qualified_name(value)
    if len(parts) not in (1, 2) or any(not part for part in parts):
        raise ValueError(f"{value!r} must be 'table' or 'schema.table' (double-quote parts with dots)")
    return value


class ColumnType(ApiModel):
    """One vector column re-created with a target type of the user's choosing (strategy Rebuild)."""

    table: Annotated[str, Field(min_length=1, max_length=260)]
    """'table' or 'schema.table' (schema defaults to public)."""
    column: Annotated[str, Field(min_length=1, max_length=63)]
    """The vector column."""
    type: Annotated[str, Field(min_length=1, max_length=63)]
    """The target type's name (ruvector, say); it must hold every source value exactly."""

    def key(self) -> tuple[str, str, str]:
        """(schema, table, column); the schema defaults to public."""
        schema, table = TableSelection(name=self.table).qualified()
        return schema, table, self.column

    @field_validator("table")
    @classmethod
    def _table_parses(cls, value: str) -> str:
        return table_name(value)


class RebuildSpec(ApiModel):
    """Strategy Rebuild: columns whose target type is not the one of the same kind (the default)."""

    # Only types that hold every source value exactly are accepted (halfvec into a 32-bit vector
    # type, say); the checklist refuses the rest, naming the column.
    column_types: list[ColumnType] = Field(default_factory=list, max_length=1000)
    """The older spelling of spec.columnTypes, for strategy Rebuild only; give one or the other."""

    def requested_types(self) -> dict[tuple[str, str, str], str]:
        """(schema, table, column) -> the target type name asked for."""
        return {entry.key(): entry.type for entry in self.column_types}

    @model_validator(mode="after")
    def _each_column_once(self) -> RebuildSpec:
        each_column_once(self.column_types)
        return self


def each_column_once(entries: list[ColumnType]) -> None:
    """Refuse a columnTypes list that names a column twice."""
    keys = [entry.key() for entry in entries]
    repeated = sorted({".".join(key) for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"columnTypes names {', '.join(repeated)} more than once")


class JobPlacement(ApiModel):
    """Where the backup and restore Jobs run and what they may use.

    Each field left unset takes the operator's default (the chart's `jobs` values), so a
    ResourceQuota that requires requests admits the Jobs.
    """

    # A core/v1 ResourceRequirements (requests, limits).
    resources: dict[str, Any] | None = None
    """A core/v1 ResourceRequirements (requests, limits) for the Job's container; unset: the chart's
    jobs.resources."""
    node_selector: dict[str, Annotated[str, Field(max_length=253)]] | None = Field(default=None, max_length=32)
    """Node labels the Job's pod must match; unset: the chart's jobs.nodeSelector."""
    # core/v1 Tolerations.
    tolerations: list[dict[str, Any]] | None = Field(default=None, max_length=32)
    """core/v1 Tolerations for the Job's pod; unset: the chart's jobs.tolerations."""
    image_pull_secrets: list[SecretRef] | None = Field(default=None, max_length=16)
    """Secrets for pulling the Job's image; unset: the chart's jobs.imagePullSecrets."""


class JobDefaults(JobPlacement):
    """The operator's defaults for its Jobs (the chart renders them from `jobs` into VMIG_JOB_DEFAULTS)."""

    # Where PostgreSQL's client image comes from, tagged with the server's major version: a mirror
    # in an air-gapped registry, say. spec.backup.image overrides it with a whole image name.
    image_repository: Annotated[str, Field(min_length=1, max_length=512)] = "postgres"
    pod_annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Annotations on the Jobs' pods: sidecar.istio.io/inject: "false", say, so a mesh's sidecar does not keep a
    finished Job running until its deadline."""
    pod_labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Labels on the Jobs' pods, beside the operator's own (which win on a clash)."""
    storage_class_name: Annotated[str | None, Field(min_length=1, max_length=253)] = None
    """The StorageClass of the backup claim <name>-backup; unset: the cluster's default."""
    run_as_user: Annotated[int | None, Field(ge=1)] = 999
    """The Jobs' UID, GID and fsGroup: 999, the official postgres image's user, which can write the archive.
    None leaves them to the platform, as OpenShift's restricted SCC assigns them from the namespace's range."""


class BackupSpec(JobPlacement):
    """The pre-migration dump; the swap never runs without a verified one while enabled."""

    enabled: bool = True
    """Whether a verified pg_dump is taken before the swap. Strategy Rebuild requires it."""
    scope: BackupScope = BackupScope.FULL
    """Full: the whole database; Tables: the migrated tables only."""
    # Any Kubernetes volume source (the operator mounts it into the backup Job); a PVC by default.
    volume: dict[str, Any] | None = None
    """Any Kubernetes volume source for the dump, mounted into the backup Job; unset: a PersistentVolumeClaim sized
    from the database."""
    image: Annotated[str | None, Field(max_length=512)] = None
    """The whole image for the backup and restore Jobs; unset: the chart's jobs.imageRepository tagged with the
    server's major version."""


class ReindexSpec(ApiModel):
    """How target indexes are built. Parameters override saved index storage parameters."""

    mode: ReindexMode = ReindexMode.ATOMIC
    """Atomic: indexes are built inside the swap's transaction; Concurrent: after its commit, with CREATE INDEX
    CONCURRENTLY, so writes wait only for the conversion."""
    maintenance_work_mem: Annotated[
        str, Field(pattern=_MEMORY, max_length=_SETTING_LENGTH), AfterValidator(_at_most_kb)
    ] = "1GB"
    """maintenance_work_mem for the index builds (PostgreSQL's spelling: 1GB, 512MB)."""
    parameters: dict[str, int | str] = Field(default_factory=dict, max_length=32)
    """Index storage parameters for every rebuilt index (m, ef_construction, lists), over the saved ones."""

    @field_validator("parameters")
    @classmethod
    def _parameters_are_plain(cls, value: dict[str, int | str]) -> dict[str, int | str]:
        for name, setting in value.items():
            if not _PARAMETER_NAME.match(name):
                raise ValueError(f"index parameter name {name!r} must be a lower-case identifier")
            if not _PARAMETER_VALUE.match(str(setting)):
                raise ValueError(f"index parameter {name} value {setting!r} must be a number or a word")
            if isinstance(setting, int) and not 0 <= setting <= PG_INT_MAX:
                raise ValueError(f"index parameter {name} value {setting} is outside 0..{PG_INT_MAX}")
        return value


class DriftCheckSpec(ApiModel):
    """How often the operator re-checks a succeeded migration's database (a read; it changes nothing)."""

    interval: Annotated[Duration, _LONG_DURATION] = "10m"
    """How often (10min, 1h, …); 0 turns the check off."""

    @property
    def seconds(self) -> float | None:
        """The interval in seconds, or None when ``0`` turns the check off."""
        value = duration_ms(self.interval) / 1000
        return value or None


class IndexesSpec(ApiModel):
    """Indexes beyond a plain vector column's: expressions, several columns, pgvector's classes for bit."""

    unmappable: UnmappableIndexes = UnmappableIndexes.REFUSE
    """Refuse (the default): the checklist refuses an index the target has no counterpart for, by name; Drop: the
    plan drops it, listing its definition (a rollback creates it again)."""


class LatencyVerifySpec(ApiModel):
    """What a latency regression does once it survived every round of measurement."""

    enforce: LatencyEnforcement = LatencyEnforcement.HOLD
    """Hold (the default): wait in Verify for a person to promote or roll back; Rollback: roll a clear regression
    back; Warn: succeed with a warning."""


class VerifySpec(ApiModel):
    """What 'verified' means: recall against the pgvector baseline, latency within a bound."""

    # 200: at 100,000 x 384 on 2 cores verify takes 1.9% of the migration, the checklist with its
    # baseline and verify 10% (bench/run.py --only sample-sizes; README); 1,000 would take a third.
    sample_queries: Annotated[int, Field(ge=1, le=10_000)] = 200
    """How many stored vectors serve as queries for recall and latency, before and after."""
    k: Annotated[int, Field(ge=1, le=1_000)] = 10
    """Neighbours per query: recall@k."""
    max_recall_drop: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """How far recall@k may fall below the pgvector baseline (0.05: five points)."""
    min_recall: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    """An absolute floor for recall@k, checked as well when set."""
    max_latency_regression: Annotated[float, Field(ge=1.0)] = 1.5
    """How many times slower than before an index may answer (1.5: half as slow again), relative to a control
    query."""
    # Absolute slack added to the latency bound, so sub-millisecond noise cannot fail a migration.
    latency_slack_ms: Annotated[float, Field(ge=0.0)] = 2.0
    """Milliseconds added to the latency bound, so sub-millisecond noise cannot fail a migration."""
    # Latency over the bound is measured again, up to this many rounds in all, before it counts.
    max_rounds: Annotated[int, Field(ge=1, le=10)] = 3
    """Latency over the bound is measured again, up to this many rounds in all, before it counts."""
    latency: LatencyVerifySpec = Field(default_factory=lambda: LatencyVerifySpec())
    """What a latency regression does once every round confirmed it."""


class RollbackSpec(ApiModel):
    """What happens when a phase after the swap fails."""

    on_failure: RollbackPolicy = RollbackPolicy.AUTOMATIC
    """Automatic: a failure after the swap rolls back in SQL (or restores the backup, with consent); Manual: the
    migration stops for a person."""


class InPlaceSpec(ApiModel):
    """How strategy InPlace groups its conversion into transactions."""

    # None: one transaction converts every table. A number: each batch of that many tables is its own
    # transaction, and pgvector is dropped with the last; the lock table then holds one batch's locks.
    tables_per_batch: Annotated[int | None, Field(ge=1, le=100_000)] = None
    """Convert this many tables per transaction instead of all in one, so thousands of tables fit the
    server's lock table. Between batches the application sees some tables on each type. Needs a target
    whose names differ from the source's, so both can be installed side by side."""


class ParallelSpec(ApiModel):
    """The Parallel strategy's backfill pace and how long the replaced tables are kept."""

    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 5_000
    """Rows copied into a shadow table per transaction."""
    # None: as fast as the database allows; a number bounds the backfill's load on a busy primary.
    rows_per_second: Annotated[int | None, Field(ge=1)] = None
    """A bound on the backfill's pace, for a busy primary; unset: as fast as the database allows."""
    # The replaced pgvector tables stay (kept in sync, so a swap back loses nothing) this long.
    keep_old_for: Annotated[Duration, _LONG_DURATION] = "24h"
    """How long the replaced pgvector tables are kept in sync after the finalize, so a swap back loses nothing
    (24h, 30min; 0s drops them at once)."""


class ReplicateTargetSpec(ApiModel):
    """Another server (another CloudNativePG cluster) for the new database."""

    # A superuser login on that server (CloudNativePG's <cluster>-superuser Secret): it creates the
    # new database and the subscriptions. Only its host, port, user and password are read.
    secret_ref: SecretRef
    """A superuser login on that server (CloudNativePG's <cluster>-superuser Secret): it creates the new database
    and the subscriptions. Only its host, port, user and password are read."""


class ReplicateSpec(ApiModel):
    """The Replicate strategy: the new database the rows are replicated into, and what happens to the old one."""

    model_config = ConfigDict(json_schema_extra=cel_rules(REPLICATE_RULES))

    # The new database. Empty: <database>_<target extension> on the same server, or the source's
    # name on another server (target).
    target_database: Annotated[str | None, Field(min_length=1, max_length=63)] = None
    """The new database's name; unset: <database>_<target extension> on the same server, or the source's name on
    another server."""
    # Unset: the new database is made on the source's server and the switchover renames the two.
    # Set: it is made on that server; the switchover fences the source (CONNECTION LIMIT 0) and
    # publishes the new endpoint (status.replicate.endpoint, the <name>-target Secret).
    target: ReplicateTargetSpec | None = None
    """Another server for the new database; unset: the source's server, and the switchover renames the two."""
    # After the switchover the old database (<database>_pgvector_old) is kept in sync from the new one
    # this long, so a rollback loses no write; then replication stops.
    keep_old_for: Annotated[Duration, _LONG_DURATION] = "24h"
    """How long the old database is kept in sync from the new one after the switchover, so a rollback loses no
    write (24h, 30min)."""
    # Whether the old database is dropped once keepOldFor has passed (else it stays, unreplicated).
    drop_old: bool = False
    """Whether the old database is dropped once keepOldFor has passed (else it stays, no longer replicated). Same
    server only."""
    # How long the switchover waits, with writes blocked, for the new database to catch up.
    switchover_timeout: Annotated[Duration, _PG_DURATION] = "60s"
    """How long the switchover waits, with writes blocked, for the new database to catch up (60s)."""

    @model_validator(mode="after")
    def _rules_across_fields(self) -> ReplicateSpec:
        broken = broken_rule(REPLICATE_RULES, self.model_dump(by_alias=True, mode="json"))
        if broken is not None:
            raise ValueError(broken)
        return self


class PauseSpec(ApiModel):
    """A pause between cutover steps: for a duration, or (no duration) until promoted."""

    duration: Annotated[Duration | None, _LONG_DURATION] = None
    """How long to pause (10min, 1h); unset: until a person promotes (kubectl vmig promote)."""


class CutoverStep(ApiModel):
    """One step of the cutover: route a share of reads to the new tables, or pause."""

    set_weight: Annotated[int | None, Field(ge=0, le=100)] = None
    """The percentage of reads routed to the new tables."""
    pause: PauseSpec | None = None
    """A pause, for a duration or until promoted."""

    @model_validator(mode="after")
    def _one_action(self) -> CutoverStep:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError("a cutover step has exactly one of setWeight and pause")
        return self


class CutoverSpec(ApiModel):
    """Steps between a verified shadow and the finalize (Argo Rollouts' canary steps, for reads)."""

    steps: list[CutoverStep] = Field(default_factory=list, max_length=50)
    """The steps in order, each a setWeight or a pause (Argo Rollouts' canary steps, for reads)."""


class TierSpec(ApiModel):
    """RuVector tiered storage thresholds, in hours."""

    hot_hours: Annotated[int, Field(ge=1)] = 24
    """Hours a vector stays in the hot tier."""
    warm_hours: Annotated[int, Field(ge=1)] = 168
    """Hours before it moves to the cold tier."""
    cold_hours: Annotated[int, Field(ge=1)] = 720
    """Hours before it is archived."""


class PostMigrationSpec(ApiModel):
    """Optional RuVector features, applied only when the target exposes their functions."""

    register_collections: bool = False
    """Register each migrated column as a RuVector collection (ruvector_register_collection), where the target has
    that function."""
    tiers: TierSpec | None = None
    """RuVector tiered storage thresholds (ruvector_set_tiers), where the target has that function."""
    integrity_policy: dict[str, Any] | None = None
    """A RuVector integrity policy (ruvector_integrity_policy_set), where the target has that function."""
