"""Prometheus metrics of the operator: migrations by phase, phase durations, failures.

A registry of its own (not the process-global default), so two operators in one test process
do not count into each other; the command line serves it on ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..vocabulary import Phase

# Phases last from seconds (checklist of a small database) to hours (reindex of a large one).
_DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, float("inf"))


@dataclass
class OperatorMetrics:
    """What the operator reports; handlers call ``observe`` after every status change."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _phases: dict[str, Phase] = field(default_factory=dict)

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
        """A deleted resource no longer counts in any phase."""
        previous = self._phases.pop(uid, None)
        if previous is not None:
            self.migrations.labels(previous.value).dec()

    def serve(self, port: int, address: str = "0.0.0.0") -> int:  # noqa: S104 - scraped from other pods
        """Serve ``/metrics`` on a background thread; return the port (0 picks a free one)."""
        server, _ = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_port)
