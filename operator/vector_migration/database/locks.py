"""Will a transaction's locks fit PostgreSQL's lock table? Counted before anything is changed.

Every relation a transaction alters, drops or creates, and every object DROP EXTENSION removes, takes
a lock held until commit, in one shared table sized ``max_locks_per_transaction * (max_connections +
max_prepared_transactions)``. A transaction that needs more fails with "out of shared memory" (HINT:
increase max_locks_per_transaction), which takes a server restart to raise. A schema with thousands
of vector tables meets this on default settings (64 * 100 slots): the checklist counts what each
strategy's transactions will lock and refuses before the backup, naming the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ..vocabulary import Reason
from .catalog import Blocker

# A relation is locked once per lock mode a transaction takes on it (reading it, building an index on
# it, altering it): four at most in a swap. Measured against pg_locks during a real InPlace swap
# (tests/test_lock_budget.py): 245 relation locks for 61 relations.
MODES_PER_RELATION = 4
# What else a swap holds: the system catalogs once the session's 16 fast-path slots are used, and the
# target's objects its statements name.
CATALOG_AND_TARGET_LOCKS = 128

# The application's share of the lock table, held back from the migration: at least this part, or
# what other sessions hold now when that is more.
APPLICATION_SHARE = 0.2

# A relation of these tables, counted once each: the table, its indexes, its TOAST table and that
# one's index, and the views and materialized views over it (and a materialized view's indexes).
_RELATIONS = """
WITH tables AS (
    SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
), dependents AS (
    SELECT DISTINCT r.ev_class AS oid FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
     WHERE d.refobjid IN (SELECT oid FROM tables) AND r.ev_class NOT IN (SELECT oid FROM tables)
), owners AS (
    SELECT oid FROM tables UNION SELECT oid FROM dependents
), toast AS (
    SELECT reltoastrelid AS oid FROM pg_catalog.pg_class WHERE oid IN (SELECT oid FROM owners) AND reltoastrelid <> 0
)
SELECT (SELECT count(*) FROM owners) + (SELECT count(*) FROM toast)
     + (SELECT count(*) FROM pg_catalog.pg_index WHERE indrelid IN (SELECT oid FROM owners UNION SELECT oid FROM toast))
"""


@dataclass(frozen=True)
class LockTable:
    """The server's shared lock table: its size, and what other sessions hold in it now."""

    max_locks_per_transaction: int
    sessions: int  # max_connections + max_prepared_transactions
    held: int  # locks held now outside the fast path (which weak table locks use)

    @property
    def slots(self) -> int:
        """The lock table's size."""
        return self.max_locks_per_transaction * self.sessions

    @property
    def kept_for_the_application(self) -> int:
        """The application's share of the slots, or what other sessions hold now when that is more."""
        return max(self.held, int(self.slots * APPLICATION_SHARE))

    @property
    def available(self) -> int:
        """What the migration may take."""
        return self.slots - self.kept_for_the_application

    def setting_needed(self, locks: int) -> int:
        """The max_locks_per_transaction at which ``locks`` fits beside the application's share."""
        per_session = -(-locks // self.sessions)  # ceiling
        return max(self.max_locks_per_transaction + 1, -(-per_session * 10 // 8))


async def lock_table(conn: asyncpg.Connection) -> LockTable:
    """The lock table's size and what is held in it now."""
    row = await conn.fetchrow(
        "SELECT current_setting('max_locks_per_transaction')::int AS per_transaction,"
        " current_setting('max_connections')::int + current_setting('max_prepared_transactions')::int AS sessions,"
        " (SELECT count(*) FROM pg_catalog.pg_locks WHERE NOT fastpath) AS held"
    )
    return LockTable(int(row["per_transaction"]), int(row["sessions"]), int(row["held"]))


async def relations_locked(conn: asyncpg.Connection, tables: list[tuple[str, str]]) -> int:
    """The relation locks a transaction altering these tables takes.

    The tables, their indexes, TOAST and dependents, each in every mode the swap takes it in.
    """
    if not tables:
        return 0
    schemas, names = [s for s, _ in tables], [t for _, t in tables]
    return MODES_PER_RELATION * int(await conn.fetchval(_RELATIONS, schemas, names))


async def extension_members(conn: asyncpg.Connection, extension: str) -> int:
    """The objects DROP EXTENSION removes, each locked.

    Its members (types, functions, operators, classes, casts) and what goes with them (each operator
    family's operators and support functions).
    """
    return int(
        await conn.fetchval(
            """
            WITH members AS (
                SELECT d.classid, d.objid
                  FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                 WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
                   AND e.extname = $1
            )
            SELECT (SELECT count(*) FROM members) + (SELECT count(DISTINCT (d.classid, d.objid))
                FROM pg_catalog.pg_depend d JOIN members m ON m.classid = d.refclassid AND m.objid = d.refobjid
               WHERE d.deptype IN ('a', 'i'))
            """,
            extension,
        )
    )


# What a refusal says when no strategy fits with fewer locks.
NO_STRATEGY_NEEDS_FEWER = "no strategy needs fewer locks for these tables"
# Replicate's largest transaction is the switchover's cut (a lock per table) or one extension statement.
REPLICATE_NEEDS_FEWER = (
    "or use strategy Replicate, which builds its new database a statement at a time and locks each table "
    "once, at the switchover"
)


def lock_blockers(table: LockTable, locks: int, transaction: str, instead: str) -> list[Blocker]:
    """A refusal naming the numbers when ``locks`` does not fit, the setting that would make it fit, and ``instead``."""
    if locks <= table.available:
        return []
    return [
        Blocker(
            Reason.LOCK_TABLE_TOO_SMALL,
            f"{transaction} would hold {locks} locks at once, and the server's lock table has room for "
            f"{table.available} beside the application (max_locks_per_transaction {table.max_locks_per_transaction}"
            f" x {table.sessions} max_connections + max_prepared_transactions = {table.slots} slots, "
            f"{table.kept_for_the_application} left to the application): it would fail with "
            f"'out of shared memory'. Set max_locks_per_transaction to at least {table.setting_needed(locks)} "
            f"(it takes a server restart); {instead}",
        )
    ]
