#!/usr/bin/env python3
"""Print CHANGELOG.md's section for a version, after checking that every file names that version.

    scripts/release-notes.py 0.2.0

The release workflow runs it on the tag's version before it builds anything, so a tag that the
package, the chart (version and appVersion), the image's label or the CHANGELOG does not carry is
refused with one line naming the file, exit code 2. Standard library only: it runs before any
install.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def top_level_value(text: str, key: str) -> str:
    """A top-level `key: value` of a YAML file as simple as Chart.yaml (no nesting read)."""
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name == key:
            return value.strip().strip("\"'")
    return ""


def dockerfile_version(text: str) -> str:
    for line in text.splitlines():
        words = line.split(maxsplit=1)
        if len(words) == 2 and words[0] == "ARG" and words[1].startswith("VERSION="):
            return words[1].removeprefix("VERSION=").strip()
    return ""


def versions_carried() -> dict[str, str]:
    chart = (ROOT / "charts/vector-migration-operator/Chart.yaml").read_text()
    return {
        "pyproject.toml (project.version)": tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"],
        "Chart.yaml (version)": top_level_value(chart, "version"),
        "Chart.yaml (appVersion)": top_level_value(chart, "appVersion"),
        "Dockerfile (ARG VERSION)": dockerfile_version((ROOT / "Dockerfile").read_text()),
    }


def changelog_section(changelog: str, version: str) -> str | None:
    """The lines under `## <version> - <date>` up to the next `## `, or None when there is none."""
    lines = changelog.splitlines()
    for start, line in enumerate(lines):
        if line.startswith(f"## {version} - "):
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            return "\n".join(lines[start + 1 : end]).strip()
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: scripts/release-notes.py VERSION", file=sys.stderr)
        return 2
    version = argv[0].removeprefix("v")
    for where, carried in versions_carried().items():
        if carried != version:
            print(f"release {version}: {where} says {carried or 'nothing'}", file=sys.stderr)
            return 2
    section = changelog_section((ROOT / "CHANGELOG.md").read_text(), version)
    if not section:
        print(f"release {version}: CHANGELOG.md has no section '## {version} - <date>'", file=sys.stderr)
        return 2
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
