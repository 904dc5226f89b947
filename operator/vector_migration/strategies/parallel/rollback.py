"""Rollback of a Parallel migration: before the finalize drop the shadows; after it swap back, then drop them.

Not part of the approved plan (like InPlace's rollback): it reads what is there and undoes it. The
old tables were kept in sync since the finalize, so swapping back loses no write; their checksums
are compared with the migrated tables' under the lock first.
"""

from __future__ import annotations

import time

import asyncpg

from ...api import TableVerification
from ...database.catalog import index_names
from ...database.sql import qualify, quote_ident
from ...engine import records
from ...engine.context import Migration
from ...engine.outcomes import Advance, Fail, Outcome
from ...engine.transactions import Progress, begin_bounded_transaction, roll_back, transaction_failure
from ...phases.restore import drop_unused_extension
from ...phases.verify import compare_content, unequal
from ...status import record_checksums, record_timing, set_condition, set_cutover
from ...vocabulary import ConditionType, Phase, Reason, Timing, TransactionStep
from .dependents import TRIGGER_STATES, repoint_keys
from .extras import back_from_finalize, identity_sequences_back
from .names import INDEX_SUFFIX, OLD_SUFFIX, derived_name
from .recorded import ShadowTable, shadows_recorded
from .shadow import recorded_shadows
from .sync import drop_sync
from .verify import checksum_pair


class _Unequal(RuntimeError):
    pass


async def run_parallel_rollback(m: Migration) -> Outcome:
    """Before the finalize: drop the shadows. After it: swap back (the old tables are in sync), then drop them."""
    conn = m.session
    recorded, tables = await recorded_shadows(m)
    if tables is None:
        return Fail(Reason.NOTHING_TO_ROLL_BACK, "nothing to roll back: no shadow tables are recorded")
    if records.OLD_DROPPED in recorded:
        return Fail(
            Reason.ROLLBACK_FAILED,
            "the old pgvector tables were dropped after keepOldFor; only the backup can bring them back",
        )
    finalized = records.FINALIZED in recorded
    compared: list[TableVerification] = []
    progress = Progress()
    transaction = await begin_bounded_transaction(m)
    try:
        if finalized:
            progress.step = TransactionStep.LOCK
            relations = [qualify(t.table_schema, name) for t in tables for name in (t.table, t.old)]
            await conn.execute(f"LOCK TABLE {', '.join(relations)} IN ACCESS EXCLUSIVE MODE")
            progress.locked_at = time.perf_counter()
            for table in tables:
                compared.append(await _equal_under_lock(m, table))
                await _swap_back(conn, table)
            prepared = shadows_recorded(recorded)
            back = [*prepared.view_drops, *prepared.functions_back, *prepared.views_back] if prepared else []
            for recorded_statement in back:  # the views and functions as they were, over the pgvector tables again
                await conn.execute(recorded_statement.sql)
        for table in tables:
            progress.step, progress.subject = TransactionStep.DROP_SHADOW, table.name
            for statement in drop_sync(table, forward=True):
                await conn.execute(statement)
            await conn.execute(f"DROP TABLE IF EXISTS {qualify(table.table_schema, table.shadow)} RESTRICT")
        rolled_back = records.RollbackRecord(finalized=finalized)
        await records.forget_all_but_rollback(conn, m.name, m.status.plan_hash or "", rolled_back)
        await transaction.commit()
    except _Unequal as error:
        await roll_back(transaction)
        return Fail(Reason.ROLLBACK_FAILED, f"the old table is not in sync ({error}); nothing changed")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await roll_back(transaction)
        return transaction_failure(error, progress, m.spec, "rollback")
    prepared = shadows_recorded(recorded)
    created = prepared.created_extension if prepared is not None else False
    left = await drop_unused_extension(m, m.spec.target.extension) if created else ""
    if finalized:
        record_timing(m.status, Timing.ROLLBACK_WRITE_BLOCKED, progress.blocked_seconds)
        record_checksums(m.status, m.spec.verify.k, compared)
        message = (
            f"swapped back to the pgvector tables (kept in sync since the finalize, checksums equal to the "
            f"migrated tables: no write lost); shadows dropped{left}"
        )
    else:
        message = f"the shadow tables and their triggers are dropped; the application's tables were never touched{left}"
    set_cutover(m.status, None)  # the routing ConfigMap says weight 0 (kube.builders)
    set_condition(m.status, ConditionType.ROLLED_BACK, True, Reason.COMPLETED, message, m.generation)
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.ROLLED_BACK, message, m.generation)
    return Advance(Phase.ROLLED_BACK, message)


async def _equal_under_lock(m: Migration, table: ShadowTable) -> TableVerification:
    async def measure() -> list[TableVerification]:
        return [await checksum_pair(m, table, table.table, table.old)]

    pair = (await compare_content(m, measure))[0]
    if unequal(pair):
        new, old = f"{pair.rows_before} rows/{pair.checksum_before}", f"{pair.rows_after} rows/{pair.checksum_after}"
        raise _Unequal(f"{table.name}: {new} vs {old}")
    return pair


async def _swap_back(conn: asyncpg.Connection, table: ShadowTable) -> None:
    """The finalize's renames reversed, from the names there now: the migrated table becomes the shadow again."""
    schema = table.table_schema
    source, old = qualify(schema, table.table), qualify(schema, table.old)
    for statement in drop_sync(table, forward=False):
        await conn.execute(statement)
    renamed = {rename.original: rename.shadow for rename in table.index_renames}
    for name in await index_names(conn, source):
        back = renamed.get(name, derived_name(name, INDEX_SUFFIX))
        await conn.execute(f"ALTER INDEX {qualify(schema, name)} RENAME TO {quote_ident(back)}")
    await conn.execute(f"ALTER TABLE {source} RENAME TO {quote_ident(table.shadow)}")
    for name in await index_names(conn, old):
        original = name.removesuffix(OLD_SUFFIX)
        await conn.execute(f"ALTER INDEX {qualify(schema, name)} RENAME TO {quote_ident(original)}")
    await conn.execute(f"ALTER TABLE {old} RENAME TO {quote_ident(table.table)}")
    for key in repoint_keys(table, validated=True):
        await conn.execute(key.sql)
    for trigger in table.triggers:  # as they were before the finalize disabled them
        await conn.execute(
            f"ALTER TABLE {source} {TRIGGER_STATES[trigger.enabled]} TRIGGER {quote_ident(trigger.name)}"
        )
    for owned in table.sequences:
        await conn.execute(f"ALTER SEQUENCE {owned.sequence} OWNED BY {source}.{quote_ident(owned.column)}")
    for statement in [*identity_sequences_back(table), *back_from_finalize(table)]:
        await conn.execute(statement)
