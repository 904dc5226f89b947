"""The operator's /metrics endpoint, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import urllib.request

from vector_migration.api import VectorMigrationStatus
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


def test_each_migration_has_series_an_alert_can_name_and_they_go_with_it() -> None:
    metrics = OperatorMetrics()
    port = metrics.serve(0, "127.0.0.1")
    status = VectorMigrationStatus.model_validate(
        {
            "phase": "Backfill",
            "timings": {"writeBlockedSeconds": 0.011},
            "backup": {"location": "pvc/shop-backup/a.dump", "sizeBytes": 123456, "sha256": "ab", "verified": True},
            "verification": {"indexes": [{"name": "docs_hnsw", "queries": 200,
                                          "recallBefore": 0.96, "recallAfter": 0.97}]},
            "parallel": {"tables": [{"name": "public.docs", "shadow": "docs_vmig_shadow",
                                     "rowsCopied": 40, "rowsTotal": 100}]},
            "replicate": {"sourceDatabase": "shop", "targetDatabase": "shop_ruvector", "oldDatabase": "shop_old",
                          "lagBytes": 4096},
            "conditions": [{"type": "Reconciling", "status": "True", "reason": "Backfilling",
                            "lastTransitionTime": "2026-12-07T10:00:00Z"},
                           {"type": "Drifted", "status": "True", "reason": "Drifted",
                            "lastTransitionTime": "2026-12-07T11:00:00Z"}],
        }
    )  # fmt: skip

    metrics.describe("uid-1", "shop", "embeddings", "Parallel", status)

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    who = 'name="embeddings",namespace="shop"'
    assert f'vector_migration_info{{{who},phase="Backfill",strategy="Parallel"}} 1.0' in text
    assert f"vector_migration_write_blocked_seconds{{{who}}} 0.011" in text
    assert f'vector_migration_recall{{index="docs_hnsw",{who},when="after"}} 0.97' in text
    assert f"vector_migration_backup_size_bytes{{{who}}} 123456.0" in text
    assert f"vector_migration_replication_lag_bytes{{{who}}} 4096.0" in text
    assert f'vector_migration_backfill_rows{{{who},rows="copied",table="public.docs"}} 40.0' in text
    assert f'vector_migration_replication_slot{{{who},state="forward"}} 1.0' in text
    assert f"vector_migration_drifted{{{who}}} 1.0" in text
    assert (
        f'vector_migration_status_condition{{{who},reason="Backfilling",status="True",type="Reconciling"}} 1.0' in text
    )
    assert "vector_migration_build_info{version=" in text

    status.phase = Phase.SUCCEEDED
    metrics.describe("uid-1", "shop", "embeddings", "Parallel", status)
    assert (
        metrics.registry.get_sample_value(
            "vector_migration_info",
            {"namespace": "shop", "name": "embeddings", "strategy": "Parallel", "phase": "Backfill"},
        )
        is None
    )  # fmt: skip  (a phase left is a series gone, not a second one)

    metrics.forget("uid-1")
    assert "embeddings" not in metrics_text(port)


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())
