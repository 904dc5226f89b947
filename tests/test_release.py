"""A release is one version everywhere, and the release workflow publishes what the chart installs.

actionlint (with ShellCheck) checks the workflow itself in `make workflows`, part of `make test`.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from vector_migration.cli.commands import main

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "vector-migration-operator"
RELEASE = ROOT / ".github" / "workflows" / "release.yaml"


def package_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def release_notes(version: str) -> subprocess.CompletedProcess[str]:
    script = ROOT / "scripts" / "release-notes.py"
    return subprocess.run([sys.executable, script, version], capture_output=True, text=True, check=False)


def test_the_package_the_chart_the_image_and_the_changelog_carry_one_version() -> None:
    version = package_version()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (version, version)
    assert f"ARG VERSION={version}" in (ROOT / "Dockerfile").read_text()
    released = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")]
    assert released[0] == "## Unreleased"
    assert released[1].startswith(f"## {version} - ")


def test_the_release_notes_are_the_changelogs_section_for_the_version() -> None:
    done = release_notes(f"v{package_version()}")
    assert done.returncode == 0, done.stderr
    assert "### Added" in done.stdout and "### Fixed" in done.stdout
    assert "## " not in done.stdout.replace("### ", "")


def test_a_tag_the_files_do_not_carry_is_refused_in_one_line() -> None:
    done = release_notes("9.9.9")
    assert done.returncode == 2
    refusal = f"release 9.9.9: pyproject.toml (project.version) says {package_version()}"
    assert done.stderr.strip().splitlines() == [refusal]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert package_version() in capsys.readouterr().out


def test_the_workflow_publishes_the_image_the_chart_installs_for_both_architectures() -> None:
    workflow = yaml.safe_load(RELEASE.read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    owner, image = values["image"]["repository"].removeprefix("ghcr.io/").split("/")
    assert workflow["env"]["IMAGE"] == "ghcr.io/${{ github.repository_owner }}/" + image
    assert owner == "ruvector" and "ruvector/" in yaml.safe_load((CHART / "Chart.yaml").read_text())["home"]
    build = next(s for s in workflow["jobs"]["image"]["steps"] if s.get("id") == "build")
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["sbom"] is True
    # the chart job pins the pushed digest by editing this exact line of values.yaml
    assert '  digest: ""' in (CHART / "values.yaml").read_text().splitlines()
    assert workflow["jobs"]["check"]["steps"][-1]["run"] == ".ci/run"
