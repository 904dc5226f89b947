"""Replicate to another server (replicate.target): the new database is made there, and the application moves to it.

Two servers with wal_level = logical. The application logs in as a role of its own, as it would
in production: at the switchover the old database is fenced (CONNECTION LIMIT 0) and the
application, told the new endpoint, reconnects there. Every committed change must be on the new
server exactly once; a rollback brings the application back with every write it made there.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.application import application_writing, docs_before, final_equals_every_committed_change
from tests.replication import REPLICATE, extensions, session, shop_on, stop_at
from tests.scenarios import condition, manifest, migration
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.context import Migration, close_session
from vector_migration.engine.runner import drive, run
from vector_migration.vocabulary import Phase

_roles = itertools.count(1)
ACROSS: dict[str, Any] = {**REPLICATE, "replicate": {"keepOldFor": "1h", "target": {"secretRef": {"name": "other"}}}}


@dataclasses.dataclass(frozen=True)
class Shop:
    """The shop on the first server, the application's own login to it, and the second server."""

    source: ConnectionParams  # the migration's (superuser) login
    app: ConnectionParams  # the application's login, an ordinary role
    other: ConnectionParams  # a superuser login on the second server

    @property
    def moved(self) -> ConnectionParams:
        """The application's login to the new database on the second server."""
        return dataclasses.replace(self.app, host=self.other.host, port=self.other.port)


async def create_role(params: ConnectionParams, role: str) -> None:
    conn = await session(params, "postgres")
    try:
        await conn.execute(f'CREATE ROLE "{role}" LOGIN')
    except asyncpg.DuplicateObjectError:
        pass  # a role is the server's: an earlier test made it
    finally:
        await conn.close()


@pytest.fixture
async def shop(logical_server: EmbeddedPostgres, other_logical_server: EmbeddedPostgres) -> Shop:
    source = await shop_on(logical_server)
    role = f"shop_app_{next(_roles)}"
    for server in (logical_server, other_logical_server):
        await create_role(server.params(), role)
    await create_role(other_logical_server.params(), "vmig_app")  # the shop grants it reads (tests/application.py)
    conn = await session(source)
    try:
        await conn.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
        await conn.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    finally:
        await conn.close()
    return Shop(source, dataclasses.replace(source, user=role), other_logical_server.params())


def following(m: Migration, shop: Shop) -> Callable[[], ConnectionParams]:
    """Where the application connects: where the migration says the live database is (<name>-target)."""

    def where() -> ConnectionParams:
        replicate = m.status.replicate
        return shop.moved if replicate is not None and replicate.switched_over else shop.app

    return where


async def slots_and_databases(params: ConnectionParams, database: str) -> tuple[list[str], list[str]]:
    """The server's replication slots of ``database`` and its databases called ``database``."""
    conn = await session(params, "postgres")
    try:
        slot_names = [
            r["slot_name"]
            for r in await conn.fetch("SELECT slot_name FROM pg_replication_slots WHERE database = $1", database)
        ]
        databases = [
            r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname = $1", database)
        ]
        return slot_names, databases
    finally:
        await conn.close()


async def connection_limit(params: ConnectionParams) -> int:
    conn = await session(params, "postgres")
    try:
        return int(await conn.fetchval("SELECT datconnlimit FROM pg_database WHERE datname = $1", params.dbname))
    finally:
        await conn.close()


@pytest.mark.parametrize("target", ["ruvector_standin", "ruvector_script_standin", "ruvector_v2_standin"])
async def test_the_application_moves_to_the_new_server_and_loses_nothing(
    shop: Shop, backup_dir: Path, target: str
) -> None:
    # Arrange: the shop on the first server, the application writing as its own role for the whole run.
    conn = await session(shop.source)
    before = await docs_before(conn)
    await conn.close()
    m = migration(shop.source, manifest(target, **ACROSS), backup_dir, target_server=shop.other)
    # Act
    async with application_writing(shop.app, reconnect=True, where=following(m, shop)) as committed:
        status = await run(m, reconnect_for=30)
    # Assert: the new server holds the migrated data with every committed change once.
    assert status.phase is Phase.SUCCEEDED, status.message
    assert committed[0] > 0 and committed[1] >= 1  # the switchover ended its session; it reconnected
    new = dataclasses.replace(shop.other, dbname=shop.source.dbname)
    assert "vector" not in await extensions(new) and target in await extensions(new)
    conn = await session(new)
    try:
        await final_equals_every_committed_change(conn, before)
        await conn.execute("INSERT INTO changes (op) VALUES ('after')")  # the sequences came along
    finally:
        await conn.close()
    # The old database keeps pgvector and follows the new one; the application cannot reach it.
    assert "vector" in await extensions(shop.source)
    assert await connection_limit(shop.source) == 0
    with pytest.raises(asyncpg.TooManyConnectionsError):
        await session(shop.app)
    old_slots, _ = await slots_and_databases(shop.source, shop.source.dbname or "")
    new_slots, _ = await slots_and_databases(shop.other, shop.source.dbname or "")
    assert old_slots == [] and len(new_slots) == 1 and new_slots[0].endswith("_back")
    replicate = status.replicate
    assert replicate is not None and replicate.switched_over and replicate.reverse_replication
    assert replicate.endpoint == f"{shop.other.host}:{shop.other.port}/{shop.source.dbname}"
    assert replicate.endpoint in status.message
    assert status.verification is not None and status.verification.tables
    assert all(t.checksum_before == t.checksum_after for t in status.verification.tables)
    assert condition(status, "Ready").status == "True"


async def test_a_rollback_brings_the_application_back_with_its_writes_on_the_new_server(
    shop: Shop, backup_dir: Path
) -> None:
    # Arrange: migrated; the application writes on the new server, as its Secret now says.
    conn = await session(shop.source)
    before = await docs_before(conn)
    await conn.close()
    resource = manifest(**ACROSS)
    m = migration(shop.source, resource, backup_dir, target_server=shop.other)
    async with application_writing(shop.app, reconnect=True, where=following(m, shop)) as committed:
        status = await run(m, reconnect_for=30)
        assert status.phase is Phase.SUCCEEDED, status.message
        await asyncio.sleep(0.5)  # writes made only on the new server
        on_the_new_server = committed[0]
        # Act: roll back while it writes; it follows the migration back (where() reads switchedOver).
        back = migration(shop.source, resource, backup_dir, status=status, rollback=True, target_server=shop.other)
        m.status = back.status
        rolled = await run(back, reconnect_for=30)
        await asyncio.sleep(0.3)  # and writes on the source again
    # Assert: every change committed before, during and after the rollback is on the source once.
    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    assert committed[0] > on_the_new_server and committed[1] >= 2  # moved there and back
    assert await connection_limit(shop.source) == -1  # the application may connect again
    conn = await session(shop.source)
    try:
        await final_equals_every_committed_change(conn, before)
    finally:
        await conn.close()
    assert "vector" in await extensions(shop.source)
    assert await slots_and_databases(shop.source, shop.source.dbname or "") == ([], [shop.source.dbname])
    assert await slots_and_databases(shop.other, shop.source.dbname or "") == ([], [])


async def test_an_abort_before_the_switchover_leaves_nothing_on_either_server(shop: Shop, backup_dir: Path) -> None:
    resource = manifest(**ACROSS)
    m = migration(shop.source, resource, backup_dir, target_server=shop.other)
    await drive(m, stop=stop_at(Phase.VERIFY))
    await close_session(m)
    assert m.status.phase is Phase.VERIFY
    assert len((await slots_and_databases(shop.source, shop.source.dbname or ""))[0]) == 1  # the copy's slot

    rolled = await run(
        migration(shop.source, resource, backup_dir, status=m.status, rollback=True, target_server=shop.other)
    )

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    assert await slots_and_databases(shop.source, shop.source.dbname or "") == ([], [shop.source.dbname])
    assert await slots_and_databases(shop.other, shop.source.dbname or "") == ([], [])
    conn = await session(shop.source)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_publication") == 0
    finally:
        await conn.close()


async def test_every_blocker_of_the_other_server_is_named_at_once(
    shop: Shop, postgres: EmbeddedPostgres, backup_dir: Path
) -> None:
    # Arrange: the suite's default server as the target: wal_level replica, the application's role
    # missing, and a database of the shop's name already there.
    other = postgres.params()
    conn = await session(other, "postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{shop.source.dbname}"')
    finally:
        await conn.close()
    # Act
    status = await run(migration(shop.source, manifest(**ACROSS), backup_dir, target_server=other))
    # Assert
    assert status.phase is Phase.FAILED
    message = status.message
    assert "on the target server: wal_level is replica" in message
    (roles,) = [part for part in message.split("; ") if "own or are granted objects" in part]
    assert shop.app.user in roles  # vmig_app too, unless another scenario made it on that server
    assert f"database {shop.source.dbname} already exists" in message
    assert await connection_limit(shop.source) == -1
    assert (await slots_and_databases(shop.source, shop.source.dbname or ""))[0] == []


def secret_of(cluster_secret: dict[str, Any] | None) -> dict[str, str]:
    assert cluster_secret is not None
    return {key: base64.b64decode(value).decode() for key, value in cluster_secret["data"].items()}


async def test_the_operator_publishes_where_the_database_went_and_points_back_after_a_rollback(
    logical_server: EmbeddedPostgres, shop: Shop, tmp_path: Path
) -> None:
    from tests.chart import assert_allowed_by_the_chart
    from tests.cluster import phase, running_cluster, running_operator
    from tests.test_operator import PASSWORD, secret_for
    from tests.test_operator import migration as resource

    source_secret = {**secret_for(shop.source), "port": str(shop.source.port)}
    # CloudNativePG's keys that say where the database is, beside host, port and dbname (not read to connect)
    source_secret["jdbc-uri"] = f"jdbc:postgresql://shop-rw.default:5432/{shop.source.dbname}?password={PASSWORD}"
    source_secret["pgpass"] = f"shop-rw.default:5432:{shop.source.dbname}:postgres:{PASSWORD}\n"
    async with (
        running_cluster(tmp_path, logical_server.bin_dir) as (cluster, _),
        running_operator(cluster),
    ):
        await cluster.apply_secret("shop-app", source_secret)
        other = {"host": shop.other.host or "", "port": str(shop.other.port), "username": "postgres"}
        await cluster.apply_secret("other", {**other, "password": PASSWORD, "dbname": "*"})
        await cluster.apply(resource(**ACROSS))

        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"), timeout=120)

        # Assert: Succeeded, the schema copied by a Job that logs in to the other server, <name>-target published.
        assert phase(done) == "Succeeded", done["status"]["message"]
        replicate = done["status"]["replicate"]
        assert replicate["switchedOver"] and replicate["endpoint"].endswith(f"/{shop.source.dbname}")
        (schema_job,) = await cluster.list("batch/v1", "jobs")
        volumes = {v["name"]: v for v in schema_job["spec"]["template"]["spec"]["volumes"]}
        assert volumes["target-password"]["secret"]["secretName"] == "other"
        moved = secret_of(await cluster.request("GET", "/api/v1/namespaces/default/secrets/shop-target"))
        assert (moved["host"], moved["port"]) == (shop.other.host, str(shop.other.port))
        assert moved["password"] == PASSWORD and moved["username"] == "postgres"  # the application's login
        at = f"{shop.other.host}:{shop.other.port}/{shop.source.dbname}"
        assert moved["jdbc-uri"] == f"jdbc:postgresql://{at}?password={PASSWORD}"
        assert moved["pgpass"] == f"{shop.other.host}:{shop.other.port}:{shop.source.dbname}:postgres:{PASSWORD}\n"

        # Act: roll back; the Secret names the source again.
        await cluster.annotate("shop", {"ruvector.dev/rollback": "true"})
        rolled = await cluster.wait_for("shop", lambda r: phase(r) in ("RolledBack", "Failed"), timeout=120)

        assert phase(rolled) == "RolledBack", rolled["status"]["message"]
        events = [(e["type"], e["reason"]) for e in cluster.posted_events()]
        assert ("Normal", "Succeeded") in events and ("Normal", "RollingBack") in events
        back = secret_of(await cluster.request("GET", "/api/v1/namespaces/default/secrets/shop-target"))
        assert back == source_secret
        assert_allowed_by_the_chart(cluster.operator_requests())
    assert await connection_limit(shop.source) == -1
