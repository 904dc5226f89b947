"""Backup: dump the database and check the archive before anything changes."""

from __future__ import annotations

from ..api import (
    BackupStatus,
)
from ..database.backup import BackupError, BackupPending, BackupRequest
from ..engine.context import Migration
from ..engine.outcomes import Advance, Fail, Outcome, Wait
from ..status import record_backup, set_condition
from ..vocabulary import (
    ConditionType,
    Phase,
    Reason,
)
from .approval import next_after_backup


async def run_backup_phase(m: Migration) -> Outcome:
    """Dump the database and check the archive before anything changes."""
    inventory = m.facts.inventory
    if inventory is None:
        return Advance(Phase.CHECKLIST, "re-reading the database before the backup")
    request = BackupRequest(
        migration=m.name,
        archive_name=_safe_file_name(
            f"{inventory.server.database}-{m.name}-{(m.status.plan_hash or 'plan')[7:15]}.dump"
        ),
        scope=m.spec.backup.scope,
        tables=inventory.stored_tables(),
        partitioned=inventory.partitioned_tables(),
        server_major=inventory.server.version_num // 10000,
        plan_hash=m.status.plan_hash or "",
        database_bytes=inventory.server.database_bytes,
    )
    m.reporter.progress("backup", note=f"pg_dump {m.spec.backup.scope.value}")
    try:
        result = await m.backup.backup(m.params, request)
    except BackupPending as pending:
        return Wait(Reason.IN_PROGRESS, str(pending), delay=5.0)
    except BackupError as error:
        # A server that restarted under pg_dump took the control session with it: an outage to
        # wait out and dump again, not a broken backup.
        await m.session.fetchval("SELECT 1")
        set_condition(m.status, ConditionType.BACKUP_COMPLETED, False, Reason.BACKUP_FAILED, str(error))
        return Fail(Reason.BACKUP_FAILED, f"backup failed, nothing was changed: {error}")
    finally:
        m.reporter.task_done("backup")
    record_backup(m.status, BackupStatus(
        location=result.location, size_bytes=result.size_bytes, sha256=result.sha256, verified=True
    ))  # fmt: skip
    message = f"{result.location} ({result.size_bytes} bytes, sha256 {result.sha256[:12]}…), archive checked"
    set_condition(m.status, ConditionType.BACKUP_COMPLETED, True, Reason.COMPLETED, message, m.generation)
    return Advance(next_after_backup(m), message)


def _safe_file_name(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)
