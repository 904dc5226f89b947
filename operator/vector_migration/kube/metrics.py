"""Prometheus metrics of the operator: migrations by phase, phase durations, failures, and each migration's own.

Each migration's series carry its namespace and name, so an alert can name it: its phase
(`vector_migration_info`), its write-blocking window, its indexes' recall before and after, its
backup's size, Replicate's lag, Parallel's backfill, and whether it drifted. They go when the
resource does.

A registry of its own (not the process-global default), so two operators in one test process
do not count into each other; the command line serves it on ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..api import ReplicateStatus, VectorMigrationStatus
from ..vocabulary import ConditionType, Phase, Timing

# Phases last from seconds (checklist of a small database) to hours (reindex of a large one).
_DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, float("inf"))


@dataclass(frozen=True)
class Family:
    """One metric family as Prometheus shows it: its series' names, its type, labels and help."""

    name: str
    kind: str
    labels: tuple[str, ...]
    documentation: str

    @property
    def series_names(self) -> tuple[str, ...]:
        """The names its samples carry on /metrics (a counter's _total, a histogram's _bucket, _sum, _count)."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return tuple(f"{self.name}_{part}" for part in ("bucket", "sum", "count"))
        return (self.name,)


@dataclass
class OperatorMetrics:
    """What the operator reports; handlers call ``observe`` after every status change."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _phases: dict[str, Phase] = field(default_factory=dict)
    # each resource's own series (the gauge and its label values), removed when it changes or goes
    _series: dict[str, list[tuple[Gauge, tuple[str, ...]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.migrations = Gauge(
            "vector_migration_migrations",
            "VectorMigration resources this operator reconciles, by phase",
            ["phase"],
            registry=self.registry,
        )
        for phase in Phase:
            self.migrations.labels(phase.value).set(0)
        self.phase_seconds = Histogram(
            "vector_migration_phase_duration_seconds",
            "Time spent in a phase, observed when the phase ends",
            ["phase"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.failures = Counter(
            "vector_migration_failures",
            "Migrations that failed or rolled back, by reason",
            ["reason"],
            registry=self.registry,
        )
        self._add_per_migration_gauges()
        build = Gauge("vector_migration_build_info", "The operator's version", ["version"], registry=self.registry)
        build.labels(_version()).set(1)

    def _add_per_migration_gauges(self) -> None:
        """Each migration's own series, labelled by namespace and name so an alert can name it."""

        def per_migration(name: str, description: str, *labels: str) -> Gauge:
            return Gauge(name, description, ["namespace", "name", *labels], registry=self.registry)

        self.info = per_migration(
            "vector_migration_info", "1 for each VectorMigration, with its strategy and phase", "strategy", "phase"
        )
        self.write_blocked = per_migration(
            "vector_migration_write_blocked_seconds", "How long the migration blocked writes"
        )
        self.recall = per_migration(
            "vector_migration_recall",
            "recall@k of an index against exact search, before and after the swap",
            "index",
            "when",
        )
        self.backup_size = per_migration("vector_migration_backup_size_bytes", "The verified dump's size")
        self.lag = per_migration(
            "vector_migration_replication_lag_bytes",
            "How far Replicate's new database is behind, in WAL bytes (a growing lag keeps WAL on the source)",
        )
        self.backfill = per_migration(
            "vector_migration_backfill_rows",
            "Parallel's backfill: rows copied and rows to copy, per table",
            "table",
            "rows",
        )
        self.slot = per_migration(
            "vector_migration_replication_slot",
            "1 for Replicate's replication, in its state: forward (before the switchover), reverse (the old"
            " database follows the new one) or stopped",
            "state",
        )
        self.drifted = per_migration(
            "vector_migration_drifted", "1 when a succeeded migration's database no longer matches it"
        )
        self.condition = per_migration(
            "vector_migration_status_condition",
            "1 for each condition of the resource's status, with its status and reason (as kube-state-metrics"
            " shows a Pod's)",
            "type",
            "status",
            "reason",
        )

    def describe(self, uid: str, namespace: str, name: str, strategy: str, status: VectorMigrationStatus) -> None:
        """Set one resource's own series from its status (the ones it no longer has go)."""
        series: list[tuple[Gauge, tuple[str, ...], float]] = [
            (self.info, (namespace, name, strategy, status.phase.value), 1.0)
        ]
        if Timing.WRITE_BLOCKED in status.timings:
            series.append((self.write_blocked, (namespace, name), status.timings[Timing.WRITE_BLOCKED]))
        for index in status.verification.indexes if status.verification else []:
            for when, value in (("before", index.recall_before), ("after", index.recall_after)):
                if value is not None:
                    series.append((self.recall, (namespace, name, index.name, when), value))
        if status.backup is not None:
            series.append((self.backup_size, (namespace, name), float(status.backup.size_bytes)))
        if status.replicate is not None:
            if status.replicate.lag_bytes is not None:
                series.append((self.lag, (namespace, name), float(status.replicate.lag_bytes)))
            series.append((self.slot, (namespace, name, _slot_state(status.replicate)), 1.0))
        for table in status.parallel.tables if status.parallel else []:
            series.append((self.backfill, (namespace, name, table.name, "copied"), float(table.rows_copied)))
            series.append((self.backfill, (namespace, name, table.name, "total"), float(table.rows_total)))
        drifted = next((c for c in status.conditions if c.type == ConditionType.DRIFTED.value), None)
        if drifted is not None:
            series.append((self.drifted, (namespace, name), 1.0 if drifted.status == "True" else 0.0))
        for condition in status.conditions:
            series.append((self.condition, (namespace, name, condition.type, condition.status, condition.reason), 1.0))
        self._remove(uid)
        for gauge, labels, value in series:
            gauge.labels(*labels).set(value)
        self._series[uid] = [(gauge, labels) for gauge, labels, _ in series]

    def _remove(self, uid: str) -> None:
        for gauge, labels in self._series.pop(uid, []):
            gauge.remove(*labels)

    def observe(self, uid: str, before: Phase, after: Phase, seconds: float | None, failure: str | None) -> None:
        """Record one reconciliation step of one resource."""
        previous = self._phases.get(uid)
        if previous is not after:
            if previous is not None:
                self.migrations.labels(previous.value).dec()
            self.migrations.labels(after.value).inc()
            self._phases[uid] = after
        if before is not after and seconds is not None:
            self.phase_seconds.labels(before.value).observe(seconds)
        if failure is not None:
            self.failures.labels(failure).inc()

    def forget(self, uid: str) -> None:
        """A deleted resource no longer counts in any phase, and its own series go."""
        previous = self._phases.pop(uid, None)
        if previous is not None:
            self.migrations.labels(previous.value).dec()
        self._remove(uid)

    def families(self) -> list[Family]:
        """Every family this registry exports, whether or not a migration has set it yet (the docs' reference)."""
        collectors = [c for c in self.registry._collector_to_names if isinstance(c, Counter | Gauge | Histogram)]
        return sorted(
            (Family(c._name, c._type, tuple(c._labelnames), c._documentation) for c in collectors),
            key=lambda family: family.name,
        )

    def serve(self, port: int, address: str = "0.0.0.0") -> int:  # noqa: S104 - scraped from other pods
        """Serve ``/metrics`` on a background thread; return the port (0 picks a free one)."""
        server, _ = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_port)


def _slot_state(replicate: ReplicateStatus) -> str:
    if replicate.replication_stopped:
        return "stopped"
    return "reverse" if replicate.switched_over else "forward"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vector-migration-operator")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without installing
        return "unknown"
