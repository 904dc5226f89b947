"""Restore: bring the verified backup back, only with a person's consent to that archive."""

from __future__ import annotations

import asyncpg

from ..api import (
    BackupStatus,
    TableVerification,
)
from ..database.backup import BackupError, BackupPending, RestoreRequest
from ..database.catalog import (
    read_extension,
    read_server,
)
from ..database.measure import (
    table_checksum,
)
from ..database.sql import (
    quote_ident,
)
from ..engine import records
from ..engine.context import Migration, as_admin
from ..engine.outcomes import Advance, Fail, Hold, Outcome, Wait
from ..engine.records import SwapRecord
from ..status import set_condition, warn
from ..vocabulary import (
    JOURNAL_SCHEMA,
    ChecksumMode,
    ConditionType,
    Phase,
    Reason,
)


def restore_token(backup: BackupStatus) -> str:
    """What a person gives to consent to restoring this archive: the start of its sha256."""
    return f"sha256:{backup.sha256[:16]}"


def ask_for_restore(m: Migration, backup: BackupStatus | None, why: str) -> Outcome:
    """Hold for a person's consent to restore the verified backup (or fail when there is none)."""
    if backup is None or not backup.verified:
        return Fail(Reason.ROLLBACK_FAILED, f"{why}; there is no verified backup to restore")
    consent = m.decisions.restore_consent
    token = restore_token(backup)
    stale = (
        f" The consent given ({consent}) is not for this archive." if consent not in (None, token)
        else ""
    )  # fmt: skip
    message = (
        f"{why}. The verified backup {backup.location} can be restored instead: that replaces every object "
        f"in it with its content at backup time and loses every write made since. To restore it, consent "
        f"with {token}.{stale}"
    )
    set_condition(m.status, ConditionType.ROLLED_BACK, False, Reason.RESTORE_NEEDS_CONSENT, message, m.generation)
    return Hold(Reason.RESTORE_NEEDS_CONSENT, message)


async def restore_backup(m: Migration, swapped: SwapRecord, plan_hash: str, backup: BackupStatus) -> Outcome:
    """Restore the archive (one transaction, by the runtime), then record and check what came back."""
    conn = m.session
    server = await read_server(conn)
    request = RestoreRequest(
        migration=m.name,
        location=backup.location,
        sha256=backup.sha256,
        server_major=server.version_num // 10000,
        keep_schema=JOURNAL_SCHEMA,
    )
    try:
        # An archive re-creates extensions, which the application's role may not: the admin login restores.
        await m.backup.restore(m.inputs.admin_params or m.params, request)
    except BackupPending as pending:
        return Wait(Reason.IN_PROGRESS, str(pending), delay=5.0)
    except BackupError as error:
        return Fail(Reason.RESTORE_FAILED, f"restoring {backup.location} failed, nothing changed: {error}")
    original = swapped.source.extension if swapped.source else m.spec.source.extension
    source = await read_extension(conn, original)
    if source is None:
        return Fail(Reason.RESTORE_FAILED, f"after the restore, {original} is not installed")
    tables = []
    saved = swapped.status
    mode = ChecksumMode((saved.verification.checksum_mode if saved.verification else None) or ChecksumMode.NORMALIZED)
    before = {t.name: t for t in (saved.verification.tables if saved.verification else [])}
    for schema, table, columns in swapped.tables:
        now = await table_checksum(conn, schema, table, set(columns), mode)
        recorded = before.get(f"{schema}.{table}")
        tables.append(
            TableVerification(
                name=f"{schema}.{table}",
                rows_before=recorded.rows_before if recorded else -1,
                rows_after=now.rows,
                checksum_before=recorded.checksum_before if recorded else "unrecorded",
                checksum_after=now.checksum,
            )
        )
    async with conn.transaction():
        rolled_back = records.RollbackRecord(restored_from=backup.location, tables=tables)
        await records.forget_all_but_rollback(conn, m.name, plan_hash, rolled_back)
    left = await drop_unused_extension(m, m.spec.target.extension)
    unchanged = all((t.rows_before, t.checksum_before) == (t.rows_after, t.checksum_after) for t in tables)
    message = (
        f"restored {backup.location} (sha256 {backup.sha256[:12]}…): {source.name} {source.version} is back; "
        + ("every table equals its pre-migration checksum" if unchanged else
           "some tables differ from their pre-migration checksums: writes made between the backup and the swap "
           "are gone, as consented")
        + left
    )  # fmt: skip
    set_condition(m.status, ConditionType.ROLLED_BACK, True, Reason.RESTORED, message, m.generation)
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.ROLLED_BACK, message, m.generation)
    return Advance(Phase.ROLLED_BACK, message)


async def drop_unused_extension(m: Migration, name: str) -> str:
    """Drop the target extension if nothing uses it any more (RESTRICT); else say why it stays."""
    conn = m.session
    if await read_extension(conn, name) is None:
        return ""
    try:
        async with conn.transaction(), as_admin(m):
            await conn.execute(f"DROP EXTENSION {quote_ident(name)} RESTRICT")
    except asyncpg.DependentObjectsStillExistError as error:
        detail = (error.detail or "").splitlines()
        warning = f"{name} stays installed: objects created after the backup use it ({'; '.join(detail[:3])})"
        warn(m.status, warning)
        return f"; {warning}"
    return f"; {name} dropped"
