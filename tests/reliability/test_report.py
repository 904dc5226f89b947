"""docs/reliability.md lists exactly the declared scenarios: no row lost, no bad input taken, no privilege gained."""

from __future__ import annotations

import importlib

from tests.reliability.report import REPORT, SCENARIOS, documented_ids


def test_the_report_lists_every_declared_scenario_and_no_other() -> None:
    for module in (
        "test_interruptions",
        "test_hostile_conditions",
        "test_parallel_interruptions",
        "test_api_faults",
        "test_hostile_world",
    ):
        importlib.import_module(f"tests.reliability.{module}")  # declares its scenarios

    assert documented_ids() == sorted(SCENARIOS), "run `make reliability` to regenerate docs/reliability.md"


def test_the_report_shows_every_scenario_observed_with_nothing_lost() -> None:
    rows = [line.split(" | ") for line in REPORT.read_text().splitlines() if line.startswith("| `")]
    assert rows
    assert all(row[3] != "not run" for row in rows), "every scenario ran when the report was written"
    assert all([cell.strip(" |") for cell in row[4:7]] == ["0", "0", "0"] for row in rows)
