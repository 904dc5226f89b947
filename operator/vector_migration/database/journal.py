"""The engine's own record, kept in the migrated database beside the data it describes.

A status patch can be lost and a process can die between any two lines; the journal row for
the swap is written inside the swap's own transaction, so "the swap committed" and "the journal
says so" are one fact. Every phase after the swap reads what it needs from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..vocabulary import JOURNAL_SCHEMA, JOURNAL_TABLE
from .sql import qualify, quote_ident

JOURNAL = qualify(JOURNAL_SCHEMA, JOURNAL_TABLE)

SWAPPED = "swapped"
REINDEXED = "reindexed"
VERIFIED = "verified"
ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class JournalEntry:
    """One recorded event of a migration."""

    event: str
    plan_hash: str
    detail: dict[str, Any]


async def ensure(conn: asyncpg.Connection) -> None:
    """Create the journal if missing (inside the caller's transaction)."""
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(JOURNAL_SCHEMA)}")
    await conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {JOURNAL} (
            migration text NOT NULL,
            event text NOT NULL,
            plan_hash text NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
            detail jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            PRIMARY KEY (migration, event)
        )
        """
    )
    await conn.execute(
        f"COMMENT ON TABLE {JOURNAL} IS "
        "'What vector-migration has done in this database; read on every run, safe to drop after success.'"
    )


async def record(conn: asyncpg.Connection, migration: str, event: str, plan_hash: str, detail: dict[str, Any]) -> None:
    """Record an event (replacing an earlier record of the same event)."""
    await ensure(conn)
    await conn.execute(
        f"""
        INSERT INTO {JOURNAL} (migration, event, plan_hash, detail) VALUES ($1, $2, $3, $4::pg_catalog.jsonb)
        ON CONFLICT (migration, event)
        DO UPDATE SET plan_hash = EXCLUDED.plan_hash, detail = EXCLUDED.detail, recorded_at = pg_catalog.now()
        """,
        migration,
        event,
        plan_hash,
        json.dumps(detail),
    )


async def read(conn: asyncpg.Connection, migration: str) -> dict[str, JournalEntry]:
    """Every recorded event of a migration, by event name; empty when nothing was ever swapped."""
    exists = await conn.fetchval("SELECT pg_catalog.to_regclass($1) IS NOT NULL", JOURNAL)
    if not exists:
        return {}
    rows = await conn.fetch(
        f"SELECT event, plan_hash, detail::pg_catalog.text AS detail FROM {JOURNAL} WHERE migration = $1",
        migration,
    )
    return {row["event"]: JournalEntry(row["event"], row["plan_hash"], json.loads(row["detail"])) for row in rows}


async def other_migrations(conn: asyncpg.Connection, migration: str) -> list[str]:
    """Names of other migrations that swapped this database."""
    exists = await conn.fetchval("SELECT pg_catalog.to_regclass($1) IS NOT NULL", JOURNAL)
    if not exists:
        return []
    rows = await conn.fetch(
        f"SELECT DISTINCT migration FROM {JOURNAL} WHERE migration <> $1 AND event = $2", migration, SWAPPED
    )
    return [row["migration"] for row in rows]
