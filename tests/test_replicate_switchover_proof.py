"""The switchover's proof: both sides checksummed at a cut while the application writes, not under the block.

The checksums read every row, so they are taken before writes are blocked, at one point of the
source's history (its tables held in SHARE mode only until the new database has confirmed that
point). Under the block what is left to show is that only replication wrote to the new database
since: a write behind its back, before the cut or after it, still stops the switchover.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.application import application_writing, docs_before, final_equals_every_committed_change
from tests.replication import REPLICATE, advance, extensions, session, shop_on
from tests.scenarios import manifest, migration
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.runner import run
from vector_migration.strategies.replicate import switchover
from vector_migration.vocabulary import Phase, Reason


@pytest.fixture
async def shop(logical_server: EmbeddedPostgres) -> ConnectionParams:
    return await shop_on(logical_server)


async def delete_a_row_on_the_new_database(shop: ConnectionParams) -> None:
    """What an application pointed at the new database too early would do."""
    conn = await session(shop, f"{shop.dbname}_ruvector_standin")
    try:
        await conn.execute("DELETE FROM docs WHERE id = (SELECT min(id) FROM docs)")
    finally:
        await conn.close()


async def test_the_checksums_are_taken_at_a_cut_and_the_block_holds_only_the_turn(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    conn = await session(shop)
    before = await docs_before(conn)
    await conn.close()
    m = migration(shop, manifest(**REPLICATE), backup_dir)

    async with application_writing(shop, reconnect=True) as committed:
        status = await run(m, reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    assert committed[0] > 0
    assert "proofHeldWritesSeconds" in status.timings and "writeBlockedSeconds" in status.timings
    assert not [w for w in status.warnings if "checksummed again" in w], status.warnings
    assert status.verification is not None and status.verification.tables
    assert all(t.checksum_before == t.checksum_after for t in status.verification.tables)
    conn = await session(shop)
    try:
        await final_equals_every_committed_change(conn, before)
    finally:
        await conn.close()


async def test_a_row_changed_on_the_new_database_before_the_cut_stops_the_switchover(
    shop: ConnectionParams, backup_dir: Path
) -> None:
    resource = manifest(**REPLICATE)
    first = migration(shop, resource, backup_dir)
    await advance(first, Phase.FINALIZE)
    await delete_a_row_on_the_new_database(shop)

    status = await run(migration(shop, resource, backup_dir, status=first.status), reconnect_for=30)

    assert status.phase is not Phase.SUCCEEDED
    assert "public.docs differ between" in status.message and "at a cut of its history" in status.message
    assert any(c.reason == Reason.DATA_MISMATCH for c in status.conditions), status.conditions
    assert "vector" in await extensions(shop)  # the application's database was never switched


async def test_a_row_changed_on_the_new_database_after_the_cut_is_found_under_the_block(
    shop: ConnectionParams, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = manifest(**REPLICATE)
    first = migration(shop, resource, backup_dir)
    await advance(first, Phase.FINALIZE)
    proven_at_a_cut = switchover._prove_at_a_cut

    async def then_a_write_behind_replications_back(*args: Any, **kwargs: Any) -> Any:
        cut = await proven_at_a_cut(*args, **kwargs)
        await delete_a_row_on_the_new_database(shop)
        return cut

    monkeypatch.setattr(switchover, "_prove_at_a_cut", then_a_write_behind_replications_back)

    status = await run(migration(shop, resource, backup_dir, status=first.status), reconnect_for=30)

    assert status.phase is not Phase.SUCCEEDED
    assert "public.docs differ between" in status.message and "with writes blocked" in status.message
    assert any("came to" in w and "checksummed again with writes blocked" in w for w in status.warnings)
    assert "vector" in await extensions(shop)
