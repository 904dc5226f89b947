"""The documentation says what the code does: a troubleshooting entry for every reason, a short
README whose quick start is the script the tests run, and alerts that link to entries that exist.

`make docs` (part of `make test`) builds the site with mkdocs --strict, which fails on a broken
link or anchor; these tests hold the facts the build cannot check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.chart import of_kind, render
from vector_migration.vocabulary import Reason

ROOT = Path(__file__).resolve().parent.parent
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"


def headings(path: Path, level: str) -> list[str]:
    return [
        line.removeprefix(level + " ").strip() for line in path.read_text().splitlines() if line.startswith(level + " ")
    ]


def test_every_reason_the_code_can_write_has_a_troubleshooting_entry() -> None:
    entries = headings(TROUBLESHOOTING, "###")
    assert sorted({reason.value for reason in Reason} - set(entries)) == []
    assert len(entries) == len(set(entries))


def test_the_troubleshooting_entries_name_no_reason_the_code_does_not_have() -> None:
    # every ### entry is a Reason, except the two alerts that have none
    others = set(headings(TROUBLESHOOTING, "###")) - {reason.value for reason in Reason}
    assert others == {"Replication lag", "Operator absent"}


def test_each_alert_links_to_an_entry_that_exists() -> None:
    (rule,) = of_kind(render({"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    anchors = {re.sub(r"[^a-z0-9]+", "-", entry.lower()).strip("-") for entry in headings(TROUBLESHOOTING, "###")}
    for alert in rule["spec"]["groups"][0]["rules"]:
        anchor = alert["annotations"]["runbook_url"].rpartition("#")[2]
        if anchor.startswith("{{"):  # the reason's own entry, lower-cased: every reason has one (above)
            continue
        assert anchor in anchors, alert["alert"]


def test_the_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < 200


def test_the_readmes_quick_start_is_the_script_the_tests_run() -> None:
    readme = (ROOT / "README.md").read_text().split("## The operator's quick start", 1)[1]
    shown = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    script = (ROOT / "examples" / "quickstart.sh").read_text().splitlines()
    commands = [line for line in script if line.startswith(("helm ", "kubectl "))]
    assert shown == commands


@pytest.mark.parametrize("page", sorted((ROOT / "docs").rglob("*.md")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_reads_like_a_lab_notebook(page: Path) -> None:
    # history goes to CHANGELOG.md, with its version; a user's page says what is true now
    text = page.read_text()
    for phrase in ("Done since", "Also done:", "Earlier runs today", "this session"):
        assert phrase not in text, phrase
