"""The migration report: the numbers a person reads, from a real migration's status, and no markup of theirs."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import create_rich_database
from tests.test_command_line import MANIFEST, url, write
from vector_migration.cli import EXIT_OK, EXIT_USAGE, main
from vector_migration.database.sql import ConnectionParams

# A table and an index whose names are markup: a report must show them, never run them
HOSTILE_NAMES = """
CREATE TABLE "<script>alert(1)</script>" (id int PRIMARY KEY, embedding vector(8));
INSERT INTO "<script>alert(1)</script>" SELECT i, array_fill(i::real, ARRAY[8])::vector
  FROM generate_series(1, 200) i;
CREATE INDEX "<img src=x onerror=alert(2)>" ON "<script>alert(1)</script>" USING hnsw (embedding vector_l2_ops);
"""


class Page(HTMLParser):
    """What a browser would build: the elements opened, and each table's cells by row."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[str] = []  # open now
        self.opened: set[str] = set()  # ever
        self.rows: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(tag)
        self.opened.add(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if self.elements and self.elements[-1] == tag:
            self.elements.pop()

    def handle_data(self, data: str) -> None:
        if self.elements and self.elements[-1] in ("td", "th") and self.rows:
            self.rows[-1][-1] += data


async def migrated_with_hostile_names(database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path) -> Path:
    """The rich database and tables named like markup, migrated from the command line: its status file."""
    await create_rich_database(conn)
    await conn.execute(HOSTILE_NAMES)
    status = tmp_path / "status.json"
    migrate = ["migrate", "-f", str(write(tmp_path, MANIFEST)), "--database-url", url(database),
               "--backup-dir", str(tmp_path / "b"), "--status-out", str(status)]  # fmt: skip
    assert await asyncio.to_thread(main, migrate) == EXIT_OK
    return status


async def test_the_report_shows_every_table_and_index_with_its_verdicts_and_runs_no_name_as_markup(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    status, report = await migrated_with_hostile_names(database, conn, tmp_path), tmp_path / "report.html"

    assert main(["report", "--status", str(status), "-o", str(report)]) == EXIT_OK

    page = Page()
    page.feed(report.read_text())
    assert "script" not in page.opened and "img" not in page.opened  # no element a name made
    assert {"figure", "svg"} <= page.opened  # the charts
    cells: dict[str, list[str]] = {}
    for row in page.rows:
        if row:
            cells.setdefault(row[0], row)  # the first table naming it: conditions, data, indexes come first
    assert cells["public.<script>alert(1)</script>"][-1] == "Pass"  # rows and checksums equal
    assert cells['Odd Schema.Mixed "Quoted" Table'][-1] == "Pass"
    hostile_index = cells["<img src=x onerror=alert(2)>"]
    assert hostile_index[5] == "Pass"  # recall verdict
    assert cells["Ready"][1] == "True"
    assert "stand-in" in report.read_text()  # the target is labelled as what it is


@pytest.mark.parametrize(
    ("content", "said"),
    [(None, "No such file"), (b"{not json", "Invalid JSON"), (b'{"phase": "Sideways"}', "phase: Input should be")],
    ids=["missing", "not JSON", "not a status"],
)
def test_a_status_that_cannot_be_read_is_one_line_and_exit_2(
    content: bytes | None, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = tmp_path / "status.json"
    if content is not None:
        status.write_bytes(content)

    code = main(["report", "--status", str(status), "-o", str(tmp_path / "report.html")])

    error = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert len(error.strip().splitlines()) == 1 and said in error
    assert not (tmp_path / "report.html").exists()
