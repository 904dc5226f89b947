"""The database password reaches pg_dump without being written to a disk, and no run leaves a copy behind."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.scenarios import create_rich_database
from tests.test_command_line import MANIFEST
from vector_migration.database.backup import run_backup
from vector_migration.database.sql import STALE_PREFIX, ConnectionParams, password_file, remove_stale_password_files
from vector_migration.demo import EmbeddedPostgres
from vector_migration.vocabulary import BackupScope

PASSWORD = "Zq7-only-in-memory-Pa55"
ROLE = "vmig_test_password_user"


@pytest.fixture
async def password_only(postgres: EmbeddedPostgres, database: ConnectionParams) -> AsyncIterator[ConnectionParams]:
    """A role the server lets in with its password only (scram), ahead of the trust lines."""
    admin = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    hba = Path(await admin.fetchval("SHOW hba_file"))
    original = hba.read_text()
    try:
        await admin.execute(f"DROP ROLE IF EXISTS {ROLE}")
        await admin.execute(f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        hba.write_text(f"local all {ROLE} scram-sha-256\n{original}")
        await admin.execute("SELECT pg_reload_conf()")
        yield dataclasses.replace(database, user=ROLE, password=PASSWORD)
    finally:
        hba.write_text(original)
        await admin.execute("SELECT pg_reload_conf()")
        await admin.execute(f"DROP ROLE IF EXISTS {ROLE}")
        await admin.close()


def files_holding(text: str, root: Path) -> list[Path]:
    """Files under root, and in the system temp directory (top level and this tool's folders), holding text."""
    temp = Path(tempfile.gettempdir())
    found = []
    for paths in (root.rglob("*"), temp.glob("*"), temp.glob(f"{STALE_PREFIX}*/*")):
        for path in paths:
            try:
                if path.is_file() and not path.is_symlink() and text.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


async def test_pg_dump_authenticates_with_a_password_that_never_touches_the_disk(
    password_only: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    without = dataclasses.replace(password_only, password="wrong")

    with pytest.raises(Exception, match="authentication failed"):  # the server really asks for it
        await asyncpg.connect(host=without.host, user=ROLE, database=without.dbname, password="wrong")
    result = await run_backup(
        password_only, tmp_path / "backups", "shop.dump", BackupScope.FULL, [("public", "items")], 18, []
    )

    assert result.size_bytes > 0
    assert files_holding(PASSWORD, tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd is Linux's")
def test_on_linux_the_password_file_is_anonymous_memory_readable_only_by_its_owner() -> None:
    with password_file(ConnectionParams(password="x:y\\z")) as passfile:
        assert passfile is not None
        (descriptor,) = passfile.inherit
        assert os.readlink(f"/proc/self/fd/{descriptor}").startswith("/memfd:")
        assert (os.fstat(descriptor).st_mode & 0o777) == 0o600
        # libpq's escaping: a colon and a backslash in the password are escaped with a backslash
        read = subprocess.run(["cat", str(passfile.path)], pass_fds=passfile.inherit, capture_output=True, check=True)
        assert read.stdout == b"*:*:*:*:x\\:y\\\\z\n"


def test_a_killed_runs_password_directory_is_removed_by_the_next_run(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{STALE_PREFIX}{dead.pid}-abc"
    stale.mkdir(mode=0o700)
    (stale / "pgpass").write_text(f"*:*:*:*:{PASSWORD}\n")
    live = tmp_path / f"{STALE_PREFIX}{os.getpid()}-def"
    live.mkdir(mode=0o700)

    assert remove_stale_password_files(tmp_path) == [stale]

    assert not stale.exists() and live.exists()


async def test_a_run_killed_mid_dump_leaves_no_copy_of_the_password(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    secret = "Kill9-Pa55word-nowhere"
    # A pg_dump that says it started, then takes its time: the moment to kill the command line.
    slow = tmp_path / "bin"
    slow.mkdir()
    started = tmp_path / "pg_dump-started"
    real = postgres.bin_dir / "pg_dump"
    (slow / "pg_dump").write_text(
        f'#!/bin/sh\nif [ "$1" = "--version" ]; then exec "{real}" --version; fi\n'
        f'touch "{started}"\nsleep 60\nexec "{real}" "$@"\n'
    )
    (slow / "pg_dump").chmod(0o755)
    manifest = tmp_path / "migration.yaml"
    manifest.write_text(yaml.safe_dump(MANIFEST))
    url = f"postgresql://{database.user}:{secret}@/{database.dbname}?host={database.host}"
    command = [sys.executable, "-m", "vector_migration.cli", "migrate", "-f", str(manifest),
               "--backup-dir", str(tmp_path / "backups"), "--pg-bin-dir", str(slow)]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, "DATABASE_URL": url}, start_new_session=True,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert process.returncode is None and time.monotonic() < deadline, "pg_dump never started"
            await asyncio.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)  # the command line and its pg_dump, as an OOM kill would
        await process.wait()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)

    assert files_holding(secret, tmp_path) == []
