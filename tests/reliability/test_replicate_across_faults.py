"""Replicate to another server under faults: the other server restarted while it streams, and a switchover cut
off with the source closed. The application writes as its own role throughout and moves when told; every change
it saw committed must be on the new server exactly once, and no slot may be left but the one back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from tests.application import application_writing, docs_before, final_equals_every_committed_change
from tests.reliability.report import declare, observe
from tests.replication import advance, session
from tests.scenarios import manifest, migration
from tests.test_replicate_across_servers import ACROSS, Shop, following, shop, slots_and_databases
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase

__all__ = ["shop"]  # the fixture, shared with the scenarios across servers

EXPECTED = (
    "the run continues from the journal; Succeeded on the other server; every committed write present once; "
    "no slot left but the one back"
)


async def nothing_lost_nothing_left(shop: Shop, before: dict[int, str | None]) -> None:
    conn = await session(dataclasses.replace(shop.other, dbname=shop.source.dbname))
    try:
        await final_equals_every_committed_change(conn, before)
    finally:
        await conn.close()
    assert (await slots_and_databases(shop.source, shop.source.dbname or ""))[0] == []
    (back,) = (await slots_and_databases(shop.other, shop.source.dbname or ""))[0]
    assert back.endswith("_back")


async def rows_of(shop: Shop) -> dict[int, str | None]:
    conn = await session(shop.source)
    try:
        return await docs_before(conn)
    finally:
        await conn.close()


declare(
    "replicate-across-target-restarted",
    "across servers: the other server (the subscriber) is killed and recovers (pg_ctl restart -m immediate) "
    "after the copy, while it streams the application's writes",
    EXPECTED,
)


async def test_the_other_server_restarted_while_streaming(
    other_logical_server: EmbeddedPostgres, shop: Shop, backup_dir: Path
) -> None:
    before = await rows_of(shop)
    resource = manifest(**ACROSS)
    m = migration(shop.source, resource, backup_dir, target_server=shop.other)
    async with application_writing(shop.app, reconnect=True, where=following(m, shop)) as committed:
        await advance(m, Phase.REINDEX)
        await asyncio.to_thread(other_logical_server.restart, "immediate")
        again = migration(shop.source, resource, backup_dir, status=m.status, target_server=shop.other)
        m.status = again.status  # the application follows this run's switchover
        status = await run(again, reconnect_for=60)
    assert status.phase is Phase.SUCCEEDED, status.message
    await nothing_lost_nothing_left(shop, before)
    observe(
        "replicate-across-target-restarted",
        f"the subscription resumed from its origin; Succeeded ({committed[0]} writes, {committed[1]} reconnects)",
        0,
    )


declare(
    "replicate-across-switchover-cut-off",
    "across servers: a switchover cut off while the source was closed (ALLOW_CONNECTIONS false, as a crash under "
    "the block leaves it), the application writing",
    "the next run opens the source again (this migration's database is on the other server), switches over and "
    "Succeeds; every committed write present once",
)


async def test_a_switchover_cut_off_with_the_source_closed(shop: Shop, backup_dir: Path) -> None:
    before = await rows_of(shop)
    resource = manifest(**ACROSS)
    m = migration(shop.source, resource, backup_dir, target_server=shop.other)
    async with application_writing(shop.app, reconnect=True, where=following(m, shop)) as committed:
        await advance(m, Phase.FINALIZE)
        admin = await session(shop.source, "postgres")
        await admin.execute(f'ALTER DATABASE "{shop.source.dbname}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND backend_type = "
            "'client backend'",
            shop.source.dbname,
        )
        await admin.close()
        await asyncio.sleep(0.3)  # the application finds the database closed
        again = migration(shop.source, resource, backup_dir, status=m.status, target_server=shop.other)
        m.status = again.status
        status = await run(again, reconnect_for=30)
    assert status.phase is Phase.SUCCEEDED, status.message
    await nothing_lost_nothing_left(shop, before)
    observe(
        "replicate-across-switchover-cut-off",
        f"opened again and switched over; Succeeded ({committed[0]} writes, {committed[1]} reconnects)",
        0,
    )
