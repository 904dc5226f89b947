"""The migration report as a person opens it: Debian's headless Chromium renders it from a file.

Chromium lays the page out and dumps the document it built: the charts are there with their
figures as text, and no element a table's or an index's name could make (a script, an image)
exists. A screenshot is taken too (the README shows one). Where Chromium is not installed the test
skips with one line, unless VMIG_REQUIRE_BROWSER=1 says it must run (.ci/run installs Debian's
chromium package and sets it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import asyncpg
import pytest

from tests.test_migration_report import migrated_with_hostile_names
from vector_migration.cli import EXIT_OK, main
from vector_migration.database.sql import ConnectionParams

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("VMIG_REQUIRE_BROWSER") != "1":
    pytest.skip("no Chromium here (Debian's chromium package): browser test skipped", allow_module_level=True)

# As the machine's probe starts it: no sandbox as root, and none of the background connections a
# closed network refuses.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Rendered(HTMLParser):
    """The elements of the document Chromium built, and every text in it."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def chromium(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None, "VMIG_REQUIRE_BROWSER=1, but there is no chromium on PATH"
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *arguments], capture_output=True, timeout=120, check=True
    )


async def test_chromium_renders_the_report_with_its_charts_and_no_markup_from_names(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    status, report = await migrated_with_hostile_names(database, conn, tmp_path), tmp_path / "report.html"
    assert main(["report", "--status", str(status), "-o", str(report)]) == EXIT_OK

    dumped = await asyncio.to_thread(chromium, tmp_path, "--dump-dom", report.as_uri())
    screenshot = tmp_path / "report.png"
    window = "--window-size=1280,2600"
    await asyncio.to_thread(chromium, tmp_path, f"--screenshot={screenshot}", window, report.as_uri())

    page = Rendered()
    page.feed(dumped.stdout.decode())
    tags = [tag for tag, _ in page.tags]
    figures = {attrs.get("id") for tag, attrs in page.tags if tag == "figure"}
    assert {"chart-timeline", "chart-recall", "chart-latency"} <= figures
    assert tags.count("svg") >= 3
    assert "script" not in tags and "img" not in tags  # no element a name made, in the built document
    text = " ".join(page.text)
    assert "before and after (95% interval)" in text and "Latency before and after (ms)" in text
    assert "<img src=x onerror=alert(2)>" in text  # the hostile index's name, shown as text
    assert "writes blocked" in text  # the swap's write-blocking window, marked on the timeline
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE) and screenshot.stat().st_size > 20_000
    if os.environ.get("VMIG_SAVE_SCREENSHOT"):  # how docs/report.png is made
        shutil.copy(screenshot, os.environ["VMIG_SAVE_SCREENSHOT"])
