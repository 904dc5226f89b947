"""The operator's /metrics endpoint, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import urllib.request

from vector_migration.kube.metrics import OperatorMetrics
from vector_migration.vocabulary import Phase


def test_metrics_follow_a_resource_through_its_phases_and_forget_it_when_deleted() -> None:
    metrics = OperatorMetrics()
    port = metrics.serve(0, "127.0.0.1")

    metrics.observe("uid-1", Phase.PENDING, Phase.CHECKLIST, None, None)
    metrics.observe("uid-1", Phase.CHECKLIST, Phase.BACKUP, 1.5, None)
    metrics.observe("uid-2", Phase.PENDING, Phase.FAILED, None, "SecretUnavailable")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()

    assert 'vector_migration_migrations{phase="Backup"} 1.0' in text
    assert 'vector_migration_migrations{phase="Checklist"} 0.0' in text
    assert 'vector_migration_phase_duration_seconds_sum{phase="Checklist"} 1.5' in text
    assert 'vector_migration_failures_total{reason="SecretUnavailable"} 1.0' in text

    metrics.forget("uid-1")
    assert metrics.registry.get_sample_value("vector_migration_migrations", {"phase": "Backup"}) == 0
