"""Replicate under faults: the run stopped mid-copy, the server restarted while streaming, the walsender
killed, and a switchover started while the new database lags. The application writes throughout
(a pool that reconnects), and every change it saw committed must be in the result exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from tests.application import application_writing, docs_before, final_equals_every_committed_change
from tests.reliability.harness import stop, until
from tests.reliability.report import declare, observe
from tests.replication import REPLICATE, advance, server_state, session, shop_on
from tests.scenarios import manifest, migration
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase

EXPECTED = (
    "the run continues from the journal; Succeeded; every committed write present once; no slot left but the one back"
)


async def nothing_lost_nothing_left(shop: ConnectionParams, before: dict[int, str | None]) -> None:
    conn = await session(shop)
    try:
        await final_equals_every_committed_change(conn, before)
    finally:
        await conn.close()
    slot_names, _ = await server_state(shop)
    assert len(slot_names) == 1 and slot_names[0].endswith("_back"), slot_names


@pytest.fixture
async def shop(logical_server: EmbeddedPostgres) -> ConnectionParams:
    return await shop_on(logical_server)


async def rows_of(shop: ConnectionParams) -> dict[int, str | None]:
    conn = await session(shop)
    try:
        return await docs_before(conn)
    finally:
        await conn.close()


declare(
    "replicate-stopped-mid-copy",
    "the command line stops (its task cancelled, its session gone) while the subscription copies, "
    "the application writing",
    EXPECTED,
)


async def test_stopped_during_the_copy(shop: ConnectionParams, backup_dir: Path) -> None:
    before = await rows_of(shop)
    resource = manifest(**REPLICATE)
    m = migration(shop, resource, backup_dir)
    async with application_writing(shop, reconnect=True) as committed:
        running = asyncio.create_task(run(m, reconnect_for=30))
        await until(lambda: asyncio.sleep(0, m.status.phase is Phase.BACKFILL), seconds=60)
        await stop(running)
        status = await run(migration(shop, resource, backup_dir), reconnect_for=30)
    assert status.phase is Phase.SUCCEEDED, status.message
    await nothing_lost_nothing_left(shop, before)
    observe("replicate-stopped-mid-copy", f"stopped in Backfill; the next run Succeeded ({committed[0]} writes)", 0)


declare(
    "replicate-server-restarted-while-streaming",
    "PostgreSQL is killed and recovers (pg_ctl restart -m immediate) after the copy, while the subscription streams "
    "the application's writes",
    EXPECTED,
)


async def test_server_restarted_while_streaming(
    logical_server: EmbeddedPostgres, shop: ConnectionParams, backup_dir: Path
) -> None:
    before = await rows_of(shop)
    resource = manifest(**REPLICATE)
    m = migration(shop, resource, backup_dir)
    async with application_writing(shop, reconnect=True) as committed:
        await advance(m, Phase.REINDEX)
        await asyncio.to_thread(logical_server.restart, "immediate")
        status = await run(migration(shop, resource, backup_dir, status=m.status), reconnect_for=60)
    assert status.phase is Phase.SUCCEEDED, status.message
    await nothing_lost_nothing_left(shop, before)
    observe(
        "replicate-server-restarted-while-streaming",
        f"the subscription resumed from its slot; Succeeded ({committed[0]} writes)",
        0,
    )


declare(
    "replicate-walsender-killed",
    "the subscription's connection is killed (pg_terminate_backend on its walsender) three times while it streams",
    EXPECTED,
)


async def test_walsender_killed_while_streaming(shop: ConnectionParams, backup_dir: Path) -> None:
    before = await rows_of(shop)
    resource = manifest(**REPLICATE)
    m = migration(shop, resource, backup_dir)
    admin = await session(shop, "postgres")
    async with application_writing(shop, reconnect=True) as committed:
        await advance(m, Phase.VERIFY)
        killed = 0
        for _ in range(3):
            pid = await until(
                lambda: admin.fetchval(
                    "SELECT active_pid FROM pg_replication_slots WHERE database = $1 AND active", shop.dbname
                ),
                seconds=30,
            )
            killed += await admin.fetchval("SELECT count(*) FROM (SELECT pg_terminate_backend($1)) t", pid)
            await asyncio.sleep(0.3)
        status = await run(migration(shop, resource, backup_dir, status=m.status), reconnect_for=30)
    await admin.close()
    assert status.phase is Phase.SUCCEEDED, status.message
    await nothing_lost_nothing_left(shop, before)
    observe("replicate-walsender-killed", f"walsender killed {killed} times; Succeeded ({committed[0]} writes)", 0)


declare(
    "replicate-switchover-while-lagging",
    "the subscription is stopped (ALTER SUBSCRIPTION … DISABLE) just before the switchover, so the new database "
    "lags behind the application's writes; switchoverTimeout 1s",
    "the switchover gives up after switchoverTimeout (ReplicationLagging), writes open again; once the subscription "
    "runs, the next attempt Succeeds; every committed write present once",
)


async def test_switchover_while_the_new_database_lags(shop: ConnectionParams, backup_dir: Path) -> None:
    before = await rows_of(shop)
    resource = manifest(**{**REPLICATE, "replicate": {"keepOldFor": "1h", "switchoverTimeout": "1s"}})
    m = migration(shop, resource, backup_dir)
    await advance(m, Phase.FINALIZE)
    replicate = m.status.replicate
    assert replicate is not None
    target = await session(shop, replicate.target_database)
    channel = await target.fetchval(
        "SELECT subname FROM pg_subscription "
        "WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    await target.execute(f"ALTER SUBSCRIPTION {channel} DISABLE")
    waits: list[float] = []

    async def meanwhile(delay: float) -> None:  # the run's back-off: the subscription runs again
        waits.append(delay)
        await target.execute(f"ALTER SUBSCRIPTION {channel} ENABLE")

    async with application_writing(shop, reconnect=True) as committed:
        await asyncio.sleep(0.5)  # writes the new database does not have
        started = time.monotonic()
        status = await run(migration(shop, resource, backup_dir, status=m.status), reconnect_for=30, sleep=meanwhile)
        took = time.monotonic() - started
    await target.close()
    assert status.phase is Phase.SUCCEEDED, status.message
    assert waits, "the switchover never gave up on the lagging subscription"
    await nothing_lost_nothing_left(shop, before)
    observe(
        "replicate-switchover-while-lagging",
        f"gave up {len(waits)} time(s) with ReplicationLagging, writes open again; then Succeeded in {took:.0f}s "
        f"({committed[0]} writes)",
        0,
    )


declare(
    "owner-code-replicate",
    "an ordinary table owner plants a function that grants it SUPERUSER in a CHECK constraint, escaping SET ROLE "
    "with RESET ROLE; a Replicate migration run by a superuser (the subscription copies and applies the rows)",
    "the rows are applied as the table's owner (run_as_owner = false), so the owner stays ordinary; Succeeded",
)


async def test_a_table_owners_code_runs_as_the_owner_when_rows_are_replicated(
    logical_server: EmbeddedPostgres, backup_dir: Path
) -> None:
    from tests.test_privileges import ATTACKER, HOSTILE_SCHEMA, SETUP

    shop = await shop_on(logical_server)
    admin = await session(shop)
    await admin.execute(SETUP)
    owner = await asyncpg.connect(host=shop.host, port=shop.port, user=ATTACKER, database=shop.dbname)
    try:  # the owner's table and function, without its materialized view (Replicate refuses those)
        await owner.execute(HOSTILE_SCHEMA.split("CREATE MATERIALIZED VIEW")[0])
    finally:
        await owner.close()

    await admin.close()  # the switchover ends every session on the database

    status = await run(migration(shop, manifest(**REPLICATE), backup_dir), reconnect_for=30)

    admin = await session(shop)
    gained = int(await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", ATTACKER))
    rows = await admin.fetchval("SELECT count(*) FROM public.documents")
    await admin.close()
    assert status.phase is Phase.SUCCEEDED, status.message
    assert gained == 0 and rows == 200
    observe("owner-code-replicate", "the owner is still an ordinary role; Succeeded", 0, privilege_gained=gained)
