"""A busy machine must not roll back a healthy migration (`make stress`; not in the default suite).

The InPlace test database is migrated again and again while CPU hogs (one per core) keep the
machine busy, as a shared node does. Latency is judged against a control query measured beside
the index's, so the load cancels out; what still looks slower is held for a person, never
rolled back. Every run must end Succeeded, or held with VerificationInconclusive, with every row
equal. VMIG_STRESS_RUNS sets the number of runs (20).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import condition, create_rich_database, manifest, migration, snapshot
from vector_migration.database.liveness import HeartbeatSettings
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

EAGER_HEARTBEAT = HeartbeatSettings(interval=0.2, misses=3)
RUNS = int(os.environ.get("VMIG_STRESS_RUNS", "20"))
pytestmark = pytest.mark.skipif(os.environ.get("VMIG_STRESS") != "1", reason="a stress run: make stress")


@contextlib.contextmanager
def cpu_hogs() -> Iterator[None]:
    """One busy process per core for the length of the block."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.parametrize("attempt", range(RUNS))
@pytest.mark.parametrize("mode", ["Atomic", "Concurrent"])  # Concurrent reads a checksum before its lock
async def test_a_healthy_migration_beside_a_cpu_hog_is_never_rolled_back(
    attempt: int, mode: str, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    with cpu_hogs():
        resource = manifest(backup={"enabled": False}, reindex={"mode": mode})
        status = await run(migration(database, resource, backup_dir))

    assert status.phase is not Phase.ROLLED_BACK, status.message
    held = condition(status, "Reconciling")  # waiting for a person: Reconciling with the reason
    assert status.phase is Phase.SUCCEEDED or (
        status.phase is Phase.VERIFY and held is not None and held.reason == Reason.VERIFICATION_INCONCLUSIVE
    ), status.message
    assert (await snapshot(conn)).rows == before.rows


@pytest.mark.parametrize("attempt", range(max(RUNS // 4, 1)))
async def test_the_heartbeat_never_ends_a_session_on_a_busy_machine(
    attempt: int, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    """The probe beside the session asks five times a second here (every 10 s by default), and
    the hogs compete with it for the CPU: a slow answer is still an answer."""
    await create_rich_database(conn)
    m = migration(database, manifest(backup={"enabled": False}), backup_dir, heartbeat=EAGER_HEARTBEAT)

    with cpu_hogs():
        status = await run(m)

    assert m.sessions_opened == 1, status.message  # never ended and reopened
    assert status.phase is not Phase.ROLLED_BACK, status.message
