"""The VectorMigration API as pydantic models: one source of truth for the CLI, the engine and the CRD.

Field names are the Kubernetes camelCase spellings (through aliases); unknown fields are
rejected so a typo in a manifest is an error naming the field, never a silently ignored knob.
"""

# size: the resource's schema is one set of pydantic models (the CRD is generated from them); split,
# the validators would sit far from the fields they check.

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .vocabulary import (
    API_GROUP,
    API_VERSION,
    KIND,
    Approval,
    BackupScope,
    LatencyEnforcement,
    Phase,
    ReindexMode,
    RollbackPolicy,
    Strategy,
    UnmappableIndexes,
)

# One grammar for every duration: Kubernetes' and Go's (500ms, 90s, 10m, 1h30m, 24h) with
# PostgreSQL's units besides (10min, 7d); the parts add up. "0" is zero. A bare number is refused,
# because Kubernetes tools read it as seconds (Argo Rollouts) and PostgreSQL as milliseconds,
# except in lockTimeout and statementTimeout, which are PostgreSQL's own settings: there it is
# PostgreSQL's milliseconds, as it always was.
_DURATION_PART = r"[0-9]+(?:us|ms|min|s|m|h|d)"
_DURATION = rf"^(?:0|(?:{_DURATION_PART})+)$"
_PG_SETTING_DURATION = rf"^(?:[0-9]+|(?:{_DURATION_PART})+)$"
DURATION_GRAMMAR = "numbers with units, adding up: 500ms, 90s, 10m, 1h30m, 24h, 7d (us, ms, s, m or min, h, d)"
# Memory spellings accepted for maintenance_work_mem.
_MEMORY = r"^[0-9]+(kB|MB|GB|TB)$"
_DURATION_MS = {"us": 0.001, "ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_MEMORY_KB = {"kB": 1, "MB": 1 << 10, "GB": 1 << 20, "TB": 1 << 30}
PG_INT_MAX = (1 << 31) - 1  # PostgreSQL keeps lock_timeout, statement_timeout and maintenance_work_mem in an int


def duration_ms(duration: str) -> float:
    """A duration of the API's grammar in milliseconds (a bare number: PostgreSQL's milliseconds)."""
    if duration.isdigit():
        return int(duration)
    return sum(int(number) * _DURATION_MS[unit] for number, unit in re.findall(r"([0-9]+)([a-z]+)", duration))


def pg_setting_duration(duration: str) -> str:
    """A duration as PostgreSQL's settings take it: whole milliseconds (1h30m is 5400000)."""
    return str(round(duration_ms(duration)))


def _duration_grammar(pattern: str) -> BeforeValidator:
    """A duration of ``pattern``'s grammar, refused with the fix otherwise (a pattern alone says only its regex)."""

    def check(value: object) -> object:
        if isinstance(value, str) and not re.fullmatch(pattern, value):
            bare = " (a bare number has no unit here: 600 seconds is 600s, 10 minutes 10m)" if value.isdigit() else ""
            raise ValueError(f"{value!r} is not a duration{bare}; write {DURATION_GRAMMAR}")
        return value

    return BeforeValidator(check)


def _at_most_ms(limit: float, described: str) -> AfterValidator:
    """A duration no longer than ``limit`` ms."""

    def check(value: str | None) -> str | None:
        if value is not None and duration_ms(value) > limit:
            raise ValueError(f"at most {described}")
        return value

    return AfterValidator(check)


def _at_most_kb(value: str) -> str:
    number, unit = re.fullmatch(r"([0-9]+)([a-zA-Z]+)", value).groups()  # type: ignore[union-attr]
    if int(number) * _MEMORY_KB[unit] > PG_INT_MAX:
        raise ValueError("at most 2147483647kB (PostgreSQL's limit)")
    return value


_PG_DURATION = _at_most_ms(PG_INT_MAX, "2147483647ms, about 24 days (PostgreSQL's limit)")
_LONG_DURATION = _at_most_ms(3650 * 86_400_000, "3650d")

# Durations and sizes are short; a bound lets the API server price the CRD's CEL rule, which
# compares them, within its cost budget (an unbounded string costs as much as a 3 MB request).
_SETTING_LENGTH = 24

# A duration field: its grammar in the CRD's schema, which the API server checks, and in the
# models, which say the fix.
Duration = Annotated[
    str, Field(max_length=_SETTING_LENGTH, json_schema_extra={"pattern": _DURATION}), _duration_grammar(_DURATION)
]
PgSettingDuration = Annotated[
    str,
    Field(max_length=_SETTING_LENGTH, json_schema_extra={"pattern": _PG_SETTING_DURATION}),
    _duration_grammar(_PG_SETTING_DURATION),
]
# An index storage parameter value: a number or a bare word (on/off); never SQL.
_PARAMETER_VALUE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_PARAMETER_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# An extension's name as its control file spells it, and a version as ALTER EXTENSION takes it.
_EXTENSION_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_EXTENSION_VERSION = r"^[A-Za-z0-9_][A-Za-z0-9_.+~-]*$"


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields refused, values validated on assignment."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        # A field's docstring is its description: the CRD's, so `kubectl explain` shows it.
        use_attribute_docstrings=True,
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


# On another server the old database is the source itself, where the migration's journal is.
DROP_OLD_ACROSS_SERVERS = (
    "replicate.dropOld applies on the same server; with replicate.target, drop the old one yourself"
)


class ReplicateTargetSpec(ApiModel):
    """Another server (another CloudNativePG cluster) for the new database."""

    # A superuser login on that server (CloudNativePG's <cluster>-superuser Secret): it creates the
    # new database and the subscriptions. Only its host, port, user and password are read.
    secret_ref: SecretRef
    """A superuser login on that server (CloudNativePG's <cluster>-superuser Secret): it creates the new database
    and the subscriptions. Only its host, port, user and password are read."""


class ReplicateSpec(ApiModel):
    """The Replicate strategy: the new database the rows are replicated into, and what happens to the old one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.target) || !has(self.dropOld) || !self.dropOld",
                    "message": DROP_OLD_ACROSS_SERVERS,
                    "fieldPath": ".dropOld",
                }
            ]
        }
    )

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
    def _old_database_kept_across_servers(self) -> ReplicateSpec:
        if self.target is not None and self.drop_old:
            raise ValueError(DROP_OLD_ACROSS_SERVERS)
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


# Rebuild empties each table inside its transaction; a verified dump is the second copy it insists on.
REBUILD_NEEDS_BACKUP = "strategy Rebuild requires backup.enabled: true (a verified dump before tables are emptied)"
# Only Rebuild re-creates the tables; InPlace and Parallel keep each column's kind of type.
COLUMN_TYPES_NEED_REBUILD = "rebuild.columnTypes requires strategy: Rebuild (columnTypes serves every strategy)"
COLUMN_TYPES_TWICE = "give columnTypes or rebuild.columnTypes (its older spelling), not both"
# Only Replicate makes a new database, and so only it can make one on another server.
TARGET_SERVER_NEEDS_REPLICATE = "replicate.target requires strategy: Replicate"
# Only InPlace converts tables where they are in transactions of its own choosing.
BATCHES_NEED_IN_PLACE = "inPlace.tablesPerBatch requires strategy: InPlace"


class VectorMigrationSpec(ApiModel):
    """What the user asks for."""

    # The API server evaluates these rules against the schema's default ({}) too, where nothing is
    # defaulted inside it yet: a rule reading a field without has() made it refuse the whole CRD
    # ("no such key: strategy"), which only a real kube-apiserver showed.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.strategy) || self.strategy != 'Rebuild' || !has(self.backup)"
                    " || !has(self.backup.enabled) || self.backup.enabled",
                    "message": "strategy Rebuild requires backup.enabled: true",
                    "fieldPath": ".backup.enabled",
                },
                {
                    "rule": "(has(self.strategy) && self.strategy == 'Rebuild') || !has(self.rebuild)"
                    " || !has(self.rebuild.columnTypes)"
                    " || size(self.rebuild.columnTypes) == 0",
                    "message": COLUMN_TYPES_NEED_REBUILD,
                    "fieldPath": ".rebuild.columnTypes",
                },
                {
                    "rule": "!has(self.columnTypes) || size(self.columnTypes) == 0 || !has(self.rebuild)"
                    " || !has(self.rebuild.columnTypes) || size(self.rebuild.columnTypes) == 0",
                    "message": COLUMN_TYPES_TWICE,
                    "fieldPath": ".columnTypes",
                },
                {
                    "rule": "(has(self.strategy) && self.strategy == 'Replicate') || !has(self.replicate)"
                    " || !has(self.replicate.target)",
                    "message": TARGET_SERVER_NEEDS_REPLICATE,
                    "fieldPath": ".replicate.target",
                },
                {
                    "rule": "!has(self.strategy) || self.strategy == 'InPlace' || !has(self.inPlace)"
                    " || !has(self.inPlace.tablesPerBatch)",
                    "message": BATCHES_NEED_IN_PLACE,
                    "fieldPath": ".inPlace.tablesPerBatch",
                },
            ]
        }
    )

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
    def _rebuild_keeps_a_backup(self) -> VectorMigrationSpec:
        if self.strategy is Strategy.REBUILD and not self.backup.enabled:
            raise ValueError(REBUILD_NEEDS_BACKUP)
        if self.rebuild.column_types and self.strategy is not Strategy.REBUILD:
            raise ValueError(COLUMN_TYPES_NEED_REBUILD)
        if self.rebuild.column_types and self.column_types:
            raise ValueError(COLUMN_TYPES_TWICE)
        if self.replicate.target is not None and self.strategy is not Strategy.REPLICATE:
            raise ValueError(TARGET_SERVER_NEEDS_REPLICATE)
        if self.in_place.tables_per_batch is not None and self.strategy is not Strategy.IN_PLACE:
            raise ValueError(BATCHES_NEED_IN_PLACE)
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


# ---------------------------------------------------------------------------------------- status


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


class ObjectMeta(BaseModel):
    """Kubernetes object metadata: the fields the engine reads, and the others an API server sets.

    A field Kubernetes does not know (a typo) is refused, as `kubectl apply --validate=strict` does.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    name: Annotated[str, Field(min_length=1, max_length=253)]
    namespace: Annotated[str | None, Field(max_length=63)] = None
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    generate_name: str | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = None
    managed_fields: list[dict[str, Any]] | None = None
    self_link: str | None = None


class VectorMigration(ApiModel):
    """The whole resource, as applied with kubectl or passed to the command line."""

    api_version: Literal["ruvector.dev/v1alpha1"] = f"{API_GROUP}/{API_VERSION}"  # type: ignore[assignment]
    kind: Literal["VectorMigration"] = KIND  # type: ignore[assignment]
    metadata: ObjectMeta
    spec: VectorMigrationSpec = Field(default_factory=VectorMigrationSpec)
    status: VectorMigrationStatus | None = None


class SpecError(ValueError):
    """A manifest that is not a valid VectorMigration; the message names the field."""


MAX_MANIFEST_BYTES = 1 << 20  # kubectl's own limit on an object is 1.5 MiB (etcd's); a migration needs far less


class _ManifestLoader(yaml.SafeLoader):
    """YAML without aliases: a manifest needs none, and expanding them is how a small file becomes a huge one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not accepted in a manifest", event.start_mark
            )
        return super().compose_node(parent, index)


def load_manifest(path: Path) -> VectorMigration:
    """Read a VectorMigration manifest, turning every problem into one readable line."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise SpecError(f"{path}: cannot read manifest: {error.strerror or error}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise SpecError(f"{path}: the manifest is larger than {MAX_MANIFEST_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 at byte {error.start}") from None
    try:
        document = yaml.load(text, Loader=_ManifestLoader)  # noqa: S506 - a SafeLoader, aliases refused
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(document, dict):
        raise SpecError(f"{path}: expected a VectorMigration object, found {type(document).__name__}")
    return parse_manifest(document, origin=str(path))


def parse_manifest(document: dict[str, Any], origin: str = "manifest") -> VectorMigration:
    """Validate a manifest already parsed from YAML or JSON, strictly, as the API server would.

    Strict JSON validation: "20" is not a number and "no" not a boolean (the API server refuses
    both; pydantic's lax mode would coerce them).
    """
    try:
        encoded = json.dumps(document, default=str)
    except (TypeError, ValueError) as error:
        raise SpecError(f"{origin}: {error}") from None
    try:
        return VectorMigration.model_validate_json(encoded, strict=True)
    except ValidationError as error:
        raise SpecError(f"{origin}: {describe_validation_error(error)}") from None


def _printable(part: object) -> str:
    """A path element as text on one line: a key with control characters or odd spacing is quoted."""
    text = str(part)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the field by its manifest path."""
    problems = []
    for item in error.errors():
        location = ".".join(_printable(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"{location}: unknown field")
        else:
            problems.append(f"{location}: {item['msg']}" if location else item["msg"])  # the document itself
    return "; ".join(problems)


def split_qualified_name(name: str) -> list[str]:
    """Split 'schema.table' as PostgreSQL reads it.

    Unquoted parts fold to lower case; quoted parts keep their case and may hold dots (a doubled
    quote inside quotes is a literal quote).
    """
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    part_was_quoted = False
    index = 0
    while index < len(name):
        char = name[index]
        if char == '"':
            if quoted and index + 1 < len(name) and name[index + 1] == '"':
                current.append('"')
                index += 2
                continue
            quoted = not quoted
            part_was_quoted = True
        elif char == "." and not quoted:
            text = "".join(current)
            parts.append(text if part_was_quoted else text.lower())
            current, part_was_quoted = [], False
        else:
            current.append(char)
        index += 1
    if quoted:
        raise ValueError(f"unbalanced double quote in {name!r}")
    text = "".join(current)
    parts.append(text if part_was_quoted else text.lower())
    return parts
