"""The names Parallel gives what it creates: derived from the originals, within 63 bytes, never colliding."""

from __future__ import annotations

import hashlib

from ...database.sql import qualify
from ...vocabulary import JOURNAL_SCHEMA

MAX_IDENTIFIER_BYTES = 63
SHADOW_SUFFIX = "_vmig_shadow"
OLD_SUFFIX = "_pgvector_old"
INDEX_SUFFIX = "_vmig"  # a shadow's index (and its constraint) until the finalize gives it the original's name
# A materialized view's replacement (and its indexes) until it takes the name, after keepOldFor
REPLACEMENT_SUFFIX = "_vmig_new"
SYNC_TRIGGER = "vector_migration_sync"
SYNC_TRUNCATE_TRIGGER = "vector_migration_sync_truncate"
# The comment that marks a table as this engine's (a re-run may meet it, a person should recognise it).
OURS = "vector-migration"


def derived_name(base: str, suffix: str) -> str:
    """``base`` + ``suffix`` within PostgreSQL's 63 bytes, never silently truncated into a collision.

    A name that would be too long keeps a prefix of the base and a hash of the whole base, so two
    long names that share their first 50 bytes still derive different names.
    """
    name = base + suffix
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode()) - len(digest) - 1
    prefix = base.encode()[:room].decode(errors="ignore")
    return f"{prefix}_{digest}{suffix}"


def table_digest(schema: str, table: str) -> str:
    """A short digest naming per-table helpers (functions) whatever the table is called."""
    return hashlib.sha256(f"{schema}.{table}".encode()).hexdigest()[:12]


def sync_function(schema: str, table: str, direction: str) -> str:
    """The qualified trigger function syncing a table in a direction ("sync" forward, "sync_back")."""
    return qualify(JOURNAL_SCHEMA, f"{direction}_{table_digest(schema, table)}")
