"""The Rebuild strategy's data path: export each vector table with COPY, import it into fresh storage.

Rebuild runs inside the same single transaction as InPlace (see :mod:`.engine`): lock the tables,
checksum them, export each one to a file, ``TRUNCATE ONLY`` it (transactional: a rollback brings
the old storage back), convert its now empty columns (instant), swap the extension, import the
file with COPY, build the indexes, checksum again, commit. So the table keeps its identity -- its
grants, owner, triggers, policies, sequences, comments and the foreign keys it holds -- while its
storage is written afresh, with no bloat and no dead tuples, which is what a person choosing
Rebuild over InPlace asks for. The files are only a transit: they live in a scratch directory for
the length of the transaction and are removed whatever happens.

Binary COPY is used only when the target's types are proven to send (and so receive) the source's
values byte for byte (the checklist's samples, then the checksums under the lock); otherwise the
export goes through text, which every type's input function reads. RuVector's binary format is
not pgvector's, so for it the text route is the one taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import asyncpg

from ..vocabulary import Reason
from .catalog import Blocker, SourceInventory
from .measure import BINARY
from .sql import is_current_role, qualify, quote_ident, run_as_role

COPY_BINARY = "binary"
COPY_TEXT = "text"

# Bytes of export per byte of table: binary COPY is about the heap's size; text prints each
# float4 in up to 15 characters instead of 4 bytes.
_EXPORT_FACTOR = {COPY_BINARY: 1.2, COPY_TEXT: 4.0}


def copy_format(checksum_mode: str) -> str:
    """Binary COPY when the target is proven to send the source's bytes; text otherwise."""
    return COPY_BINARY if checksum_mode == BINARY else COPY_TEXT


def scratch_directory(base: Path, migration: str) -> Path:
    """Where one migration's export files live: deterministic, so a re-run clears what a crash left."""
    digest = hashlib.sha256(migration.encode()).hexdigest()[:16]
    return base / f"vector-migration-rebuild-{digest}"


@contextlib.contextmanager
def export_area(base: Path, migration: str) -> Iterator[Path]:
    """A private, empty directory for the export files, removed afterwards whatever happened."""
    directory = scratch_directory(base, migration)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def export_file(directory: Path, schema: str, table: str) -> Path:
    """The file one table is exported to (named by digest: table names may hold any character)."""
    return directory / f"{hashlib.sha256(f'{schema}.{table}'.encode()).hexdigest()[:24]}.copy"


async def export_table(conn: asyncpg.Connection, directory: Path, schema: str, table: str, fmt: str) -> int:
    """COPY a table out to its export file; the bytes written.

    asyncpg's COPY API takes the names themselves and quotes them exactly as sql.quote_ident does.
    Without a column list COPY leaves generated columns out, and the import computes them again.
    """
    path = export_file(directory, schema, table)
    # Opened here, not by asyncpg, so a COPY stopped midway (a lost server) still closes the file.
    with path.open("wb") as output:
        await conn.copy_from_table(table, schema_name=schema, output=output, format=fmt)
    return path.stat().st_size


async def import_table(
    conn: asyncpg.Connection, directory: Path, schema: str, table: str, fmt: str, owner: str | None = None
) -> None:
    """COPY the export file back into the (emptied, converted) table with the table's own triggers held off.

    The rows are the ones the table already held, so an application trigger (an updated_at stamp,
    an audit row) must not fire for them again. Each enabled trigger is disabled for the import
    and then given back exactly its previous firing mode, inside the same transaction.

    COPY evaluates the table's CHECK constraints and defaults with this session's privileges. When
    another role owns the table, the rows go through a temporary table first and reach the table
    in an INSERT run as that role (sql.run_as_role), so its code never runs with ours.
    """
    relation = qualify(schema, table)
    triggers = await conn.fetch(
        """
        SELECT tgname, tgenabled::pg_catalog.text AS mode FROM pg_catalog.pg_trigger
         WHERE tgrelid = $1::pg_catalog.regclass AND NOT tgisinternal AND tgenabled <> 'D'
         ORDER BY tgname
        """,
        relation,
    )
    for trigger in triggers:
        await conn.execute(f"ALTER TABLE {relation} DISABLE TRIGGER {quote_ident(trigger['tgname'])}")
    with export_file(directory, schema, table).open("rb") as source:  # closed even when the COPY is stopped
        if owner is None or await is_current_role(conn, owner):
            await conn.copy_to_table(table, schema_name=schema, source=source, format=fmt)
        else:
            await _import_as(conn, owner, relation, source, fmt)
    enable = {"O": "ENABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}
    for trigger in triggers:
        await conn.execute(f"ALTER TABLE {relation} {enable[trigger['mode']]} TRIGGER {quote_ident(trigger['tgname'])}")


async def _import_as(conn: asyncpg.Connection, owner: str, relation: str, source: BinaryIO, fmt: str) -> None:
    """COPY into a temporary table of the same columns (no constraints), then INSERT as the owner."""
    columns = [
        quote_ident(name)
        for name in await conn.fetchval(
            """
            SELECT pg_catalog.array_agg(attname ORDER BY attnum) FROM pg_catalog.pg_attribute
             WHERE attrelid = $1::pg_catalog.regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
            """,
            relation,
        )
    ]
    staging = "vector_migration_import"
    temporary = f"pg_temp.{quote_ident(staging)}"
    listed = ", ".join(columns)
    await conn.execute(f"CREATE TEMPORARY TABLE {quote_ident(staging)} ON COMMIT DROP AS "
                       f"SELECT {listed} FROM {relation} WITH NO DATA")  # fmt: skip
    await conn.copy_to_table(staging, schema_name="pg_temp", source=source, format=fmt)
    await conn.execute(f"GRANT SELECT ON {temporary} TO {quote_ident(owner)}")
    insert = f"INSERT INTO {relation} ({listed}) OVERRIDING SYSTEM VALUE SELECT {listed} FROM {temporary}"
    await run_as_role(conn, owner, insert)
    await conn.execute(f"DROP TABLE {temporary}")


async def check_tables(
    conn: asyncpg.Connection, inventory: SourceInventory, scratch: Path, checksum_mode: str
) -> list[Blocker]:
    """What keeps Rebuild from emptying and refilling the tables, each with what to do about it."""
    blockers: list[Blocker] = []
    total_bytes = 0
    # A partitioned table's leaves are exported, emptied and imported, each on its own.
    for schema, table in sorted({*inventory.tables(), *inventory.stored_tables()}):
        facts = await conn.fetchrow(
            """
            SELECT pg_catalog.pg_table_size(c.oid) AS bytes, c.relforcerowsecurity AS forced_rls,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class ch ON ch.oid = i.inhrelid
                            WHERE (i.inhrelid = c.oid OR i.inhparent = c.oid) AND NOT ch.relispartition)
                       AS inherits
              FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass
            """,
            qualify(schema, table),
        )
        problems = []
        if facts["inherits"]:
            problems.append("inherits or is inherited from (COPY would move only part of the hierarchy)")
        if facts["forced_rls"]:
            problems.append("forces row-level security on its owner (COPY cannot read or write all of its rows)")
        if problems:
            blockers.append(
                Blocker(
                    Reason.BLOCKING_DEPENDENT,
                    f"table {schema}.{table} cannot be rebuilt: it {'; it '.join(problems)}; use InPlace",
                )
            )
        total_bytes += facts["bytes"]
    fmt = copy_format(checksum_mode)
    needed = int(total_bytes * _EXPORT_FACTOR[fmt])
    free = _free_bytes(scratch)
    if needed > free:
        blockers.append(
            Blocker(
                Reason.INSUFFICIENT_SCRATCH_SPACE,
                f"Rebuild exports the vector tables ({total_bytes} bytes) as {fmt} COPY to {scratch}, which needs "
                f"about {needed} bytes there and has {free} free; give it more space (the Helm value "
                "scratch.sizeLimit, or --scratch-dir) or use InPlace",
            )
        )
    return blockers


def _free_bytes(directory: Path) -> int:
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
