"""The chart's alerts and dashboard, held against Prometheus's own promtool and the operator's metrics.

The rules are checked and unit-tested as Helm renders them (`promtool check rules`, `promtool test
rules`: series fed in, alerts expected or not at given times). Every dashboard query is checked by
promtool's PromQL parser too, and may name only series the operator exports.
promtool is built from the Go module proxy by `scripts/go-tool.sh promtool` (the Makefile passes its
path as VMIG_PROMTOOL); without it these tests skip, unless VMIG_REQUIRE_TOOLS is set (as .ci/run does).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builds import missing_build
from tests.chart import CHART, of_kind, render
from vector_migration.kube.metrics import OperatorMetrics
from vector_migration.status import WAITING_ON_A_PERSON

MONITORING = {"metrics": {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}}
ALERT_TESTS = Path(__file__).parent / "fixtures" / "alerts-test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = os.environ.get("VMIG_PROMTOOL", "")
    if not path or not Path(path).is_file():
        missing_build(
            "VMIG_REQUIRE_TOOLS", "VMIG_PROMTOOL does not name promtool (scripts/go-tool.sh promtool builds it)"
        )
    return path


def rendered_rules(tmp_path: Path) -> Path:
    (rule,) = of_kind(render(MONITORING), "PrometheusRule")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return rules


def run(promtool: str, *argv: str, cwd: Path) -> str:
    done = subprocess.run([promtool, *argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_rules_the_chart_renders(promtool: str, tmp_path: Path) -> None:
    rules = rendered_rules(tmp_path)
    assert "SUCCESS: 5 rules found" in run(promtool, "check", "rules", str(rules), cwd=tmp_path)


def test_the_alerts_fire_when_they_should_and_only_then(promtool: str, tmp_path: Path) -> None:
    rendered_rules(tmp_path)
    (tmp_path / "alerts-test.yaml").write_text(ALERT_TESTS.read_text())
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts-test.yaml", cwd=tmp_path)


def test_the_alert_for_a_person_knows_every_reason_that_waits_for_one() -> None:
    (rule,) = of_kind(render(MONITORING), "PrometheusRule")
    (waiting,) = [r for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == "VectorMigrationWaitingForAPerson"]
    reasons = re.search(r'reason=~"([^"]+)"', waiting["expr"])
    assert reasons is not None
    assert set(reasons.group(1).split("|")) == {reason.value for reason in WAITING_ON_A_PERSON}


def test_the_thresholds_come_from_the_values() -> None:
    values = {"metrics": {"prometheusRule": {"enabled": True, "waitingForAPersonFor": "2h",
                                              "replicationLagBytes": 5 * 2**30}}}  # fmt: skip
    (rule,) = of_kind(render(values), "PrometheusRule")
    by_name = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert by_name["VectorMigrationWaitingForAPerson"]["for"] == "2h"
    lag = by_name["VectorMigrationReplicationLagGrowing"]["expr"]
    assert "vector_migration_replication_lag_bytes > 5368709120 and" in lag


def dashboard() -> dict[str, Any]:
    return dict(json.loads((CHART / "files" / "dashboard.json").read_text()))


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def exported_series() -> set[str]:
    """Every series name the operator's registry exports."""
    return {name for family in OperatorMetrics().families() for name in family.series_names}


def test_the_dashboard_asks_only_for_series_the_operator_exports() -> None:
    exported = exported_series()
    named = {name for query in dashboard_queries() for name in re.findall(r"\bvector_migration_\w+", query)}
    assert named, "the dashboard queries nothing"
    assert named - exported == set()


def test_every_dashboard_query_is_promql_that_promtool_parses(promtool: str, tmp_path: Path) -> None:
    # Grafana's variables stand for label regexes; as recording rules, promtool's parser reads each query.
    queries = [q.replace("$namespace", ".*").replace("$name", ".*") for q in dashboard_queries()]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": q}
                                                         for i, q in enumerate(queries)]}]}  # fmt: skip
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(queries)} rules found" in run(promtool, "check", "rules", "dashboard.yaml", cwd=tmp_path)


def test_the_dashboard_is_shipped_for_grafanas_sidecar() -> None:
    values = {"metrics": {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}}
    (config_map,) = [c for c in of_kind(render(values), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["vector-migration.json"]) == dashboard()
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)


def test_nothing_for_prometheus_or_grafana_is_rendered_unless_asked() -> None:
    kinds = {o["kind"] for o in render()}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
    assert not [c for c in of_kind(render(), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
