"""The published RuVector, not a stand-in: what `make ruvector` builds, migrated to and back on PostgreSQL 16.

`make ruvector` builds ruvector-postgres 2.0.6 with cargo-pgrx 0.12.9 into PostgreSQL 16.2 with
pgvector 0.6.2 (the PyPI wheel pgserver); `.ci/run` runs it and names its `pg_config` in
VMIG_RUVECTOR_PG_CONFIG, and sets VMIG_REQUIRE_RUVECTOR so that these tests fail, rather than
skip, when the build is missing.

RuVector 2.0.6's HNSW hides a table's rows from a whole-table read (docs/ruvector-findings.md), so
the engine refuses every vector index to it, by name, changing nothing: each database here is
migrated once with its indexes (refused) and once without them, as a user who drops them first.
Without them, InPlace (Atomic and Concurrent), Rebuild and Replicate migrate and roll back;
Parallel is refused by name. The shop and the real client libraries' schemas are checked in the
database with queries of these tests' own, and their searches run as the application's role.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.client_schemas import SCHEMAS
from tests.replication import session
from tests.scenarios import DB_SETTINGS, RICH_SCHEMA, manifest, migration, parse_vector, snapshot
from tests.test_client_schemas import as_the_application, create
from vector_migration.api import VectorMigration, VectorMigrationStatus
from vector_migration.cli import main
from vector_migration.database.backup import LocalBackup
from vector_migration.database.sql import ConnectionParams
from vector_migration.database.surface import discover
from vector_migration.demo.real import PG_CONFIG_VARIABLE, RealRuvectorServer
from vector_migration.engine.context import Migration
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

_databases = itertools.count(1)

# The schemas whose function uses <#>, which RuVector 2.0.6 computes otherwise than pgvector
# (docs/ruvector-findings.md): refused by name, nothing changed, with or without their indexes.
USES_INNER_PRODUCT = frozenset({"commented-function"})


def _pg_config() -> Path | None:
    named = os.environ.get(PG_CONFIG_VARIABLE)
    return Path(named) if named else None


@pytest.fixture
async def pg16(ruvector_server: RealRuvectorServer) -> AsyncIterator[tuple[ConnectionParams, asyncpg.Connection]]:
    name = f"real_{next(_databases)}"
    admin = await asyncpg.connect(ruvector_server.uri())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(ruvector_server.uri(name))
    yield ruvector_server.params(name), conn
    await conn.close()


def on_pg16(params: ConnectionParams, resource: VectorMigration, tmp_path: Path, **given: Any) -> Migration:
    """A run with PostgreSQL 16's own pg_dump and pg_restore beside it, as a user passes --pg-bin-dir."""
    bin_dir = _pg_config()
    assert bin_dir is not None
    backup = LocalBackup(tmp_path / "b", (bin_dir.parent,))
    return migration(params, resource, tmp_path / "b", backup=backup, **given)


SHOP = """
CREATE EXTENSION vector;
CREATE TABLE items (id int PRIMARY KEY, body text, embedding vector(3));
INSERT INTO items SELECT i, 'item ' || i, ARRAY[cos(i), sin(i), (i % 7) / 7.0]::real[]::vector
  FROM generate_series(1, 2000) i;
COMMENT ON COLUMN items.embedding IS 'the search column';
CREATE TABLE parts (id int PRIMARY KEY, item int CONSTRAINT parts_item_fk REFERENCES items (id));
INSERT INTO parts SELECT i, i FROM generate_series(1, 50) i;
"""
SHOP_INDEXES = """
CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX items_cosine ON items USING hnsw (embedding vector_cosine_ops);
"""

SEARCH = "SELECT id FROM items ORDER BY embedding <-> '[1,0,0]', id LIMIT 5"


async def vectors(conn: asyncpg.Connection) -> dict[int, tuple[float, ...] | None]:
    """Every vector as numbers: the real text format need not be pgvector's, the values must be the same."""
    return {r["id"]: parse_vector(r["v"]) for r in await conn.fetch("SELECT id, embedding::text AS v FROM items")}


async def owner_of(conn: asyncpg.Connection, catalog: str, name_column: str, name: str) -> str | None:
    """The extension that owns a type or an access method, from pg_depend."""
    owner: str | None = await conn.fetchval(
        f"SELECT e.extname FROM {catalog} o JOIN pg_depend d ON d.objid = o.oid AND d.deptype = 'e' "
        f"JOIN pg_extension e ON e.oid = d.refobjid WHERE o.{name_column} = $1",
        name,
    )
    return owner


async def vector_index_count(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = c.relam WHERE a.amname IN ('hnsw', 'ivfflat')"
    )
    return count


async def drop_vector_indexes(conn: asyncpg.Connection) -> None:
    """What a user of RuVector 2.0.6 must do first: drop every HNSW and IVFFlat index."""
    names = [
        r[0]
        for r in await conn.fetch(
            "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam WHERE a.amname IN ('hnsw', 'ivfflat')"
            " AND NOT c.relispartition ORDER BY 1"  # a partition's index goes with its parent's
        )
    ]
    for name in names:
        await conn.execute(f"DROP INDEX {name}")


async def assert_on_the_real_ruvector(conn: asyncpg.Connection) -> None:
    assert await owner_of(conn, "pg_type", "typname", "ruvector") == "ruvector"
    assert await owner_of(conn, "pg_am", "amname", "hnsw") == "ruvector"  # RuVector's HNSW, under pgvector's name
    assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'ruvector'") == "0.3.0"
    assert await conn.fetchval("SELECT ruvector_version()") == "2.0.6"
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 0


def assert_proven(status: VectorMigrationStatus) -> None:
    """The catalog kept whole, and every index's recall judged as it is for any target, and passing."""
    verification = status.verification
    assert verification is not None and verification.catalog is not None
    assert not verification.catalog.differences, verification.catalog.differences
    assert all(i.recall_verdict == "Pass" for i in verification.indexes), [
        (i.name, i.recall_after, i.recall_verdict) for i in verification.indexes
    ]


@pytest.mark.parametrize(
    ("strategy", "mode"), [("InPlace", "Atomic"), ("InPlace", "Concurrent"), ("Rebuild", "Atomic")]
)
async def test_a_pgvector_database_moves_to_the_real_ruvector_and_back(
    strategy: str, mode: str, pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    params, conn = pg16
    await conn.execute(SHOP)
    before, answers = await vectors(conn), await conn.fetch(SEARCH)
    resource = manifest(
        "ruvector", strategy=strategy, backup={"enabled": strategy == "Rebuild"}, reindex={"mode": mode}
    )

    status = await run(on_pg16(params, resource, tmp_path))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await vectors(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM items") == 2000
    await assert_on_the_real_ruvector(conn)
    column_type = (
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attnum = 3"
    )
    assert await conn.fetchval(column_type) == "ruvector(3)"
    assert await conn.fetchval("SELECT col_description('items'::regclass, 3)") == "the search column"
    assert await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE conname = 'parts_item_fk'") == 1
    assert [r["id"] for r in await conn.fetch(SEARCH)] == [r["id"] for r in answers]
    assert_proven(status)
    # what the application may call by name, which the engine cannot see: told, as measured
    assert "ruvector has no function taking its type for vector's avg(), sum()" in "\n".join(status.warnings)
    assert any("vector_dims() by ruvector_dims()" in warning for warning in status.warnings)
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await conn.fetchval("SELECT avg(embedding) FROM items")

    rolled = await run(on_pg16(params, resource, tmp_path, status=status, rollback=True))

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    assert not any("for ruvector's" in warning for warning in rolled.warnings)  # back to what it called before
    assert await vectors(conn) == before
    assert await owner_of(conn, "pg_am", "amname", "hnsw") == "vector"
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'ruvector'") == 0


@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild", "Replicate"])
async def test_an_hnsw_index_is_refused_because_the_real_ruvectors_makes_count_answer_zero(
    strategy: str, pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    params, conn = pg16
    await conn.execute(SHOP + SHOP_INDEXES)
    before = await snapshot(conn)
    resource = manifest("ruvector", strategy=strategy, backup={"enabled": strategy == "Rebuild"})

    status = await run(on_pg16(params, resource, tmp_path))

    assert status.phase is Phase.FAILED
    assert status.conditions[0].reason == Reason.UNMAPPED_INDEX
    for index in ("items_hnsw", "items_cosine"):
        assert f"index public.{index}" in status.message
    assert "SELECT count(*) of a table of 200 rows answered 0 with its index present" in status.message
    assert "docs/ruvector-findings.md" in status.message
    assert await snapshot(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname LIKE $1", f"{params.dbname}_%") == 0


async def test_parallel_is_refused_because_the_real_ruvectors_hnsw_takes_pgvectors_name(
    pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    params, conn = pg16
    await conn.execute(SHOP)
    before = await snapshot(conn)
    # the physics of it: one database holds one access method of a name
    with pytest.raises(asyncpg.DuplicateObjectError, match='access method "hnsw" already exists'):
        await conn.execute("CREATE EXTENSION ruvector")

    status = await run(on_pg16(params, manifest("ruvector", strategy="Parallel"), tmp_path))

    assert status.phase is Phase.FAILED
    assert status.conditions[0].reason == Reason.UNSUPPORTED_STRATEGY
    assert "names collide" in status.message and "use InPlace" in status.message
    assert await snapshot(conn) == before


async def test_batches_are_refused_because_the_real_ruvectors_hnsw_takes_pgvectors_name(
    pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    params, conn = pg16
    await conn.execute(SHOP)
    before = await snapshot(conn)

    spec = {"backup": {"enabled": False}, "inPlace": {"tablesPerBatch": 1}}
    status = await run(on_pg16(params, manifest("ruvector", **spec), tmp_path))

    assert status.phase is Phase.FAILED
    assert status.conditions[0].reason == Reason.CANNOT_BATCH
    assert "ruvector installed beside vector, and their names collide" in status.message, status.message
    assert await snapshot(conn) == before


async def test_replicate_moves_the_database_to_a_new_one_with_the_real_ruvector_and_back(
    pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    params, conn = pg16
    await conn.execute(SHOP)
    before, answers = await vectors(conn), await conn.fetch(SEARCH)
    await conn.close()
    resource = manifest("ruvector", strategy="Replicate", backup={"enabled": False}, replicate={"keepOldFor": "1h"})

    status = await run(on_pg16(params, resource, tmp_path), reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    assert_proven(status)
    conn = await session(params)
    try:
        assert await vectors(conn) == before
        await assert_on_the_real_ruvector(conn)
        assert [r["id"] for r in await conn.fetch(SEARCH)] == [r["id"] for r in answers]
        await conn.execute("INSERT INTO items VALUES (9001, 'after', '[0.5,0.5,0.5]')")
    finally:
        await conn.close()

    rolled = await run(on_pg16(params, resource, tmp_path, status=status, rollback=True), reconnect_for=30)

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    conn = await session(params)
    try:
        assert await vectors(conn) == {**before, 9001: (0.5, 0.5, 0.5)}  # the write on the new database kept
        assert await owner_of(conn, "pg_am", "amname", "hnsw") == "vector"
    finally:
        await conn.close()


# The real RuVector computes a distance in its own float arithmetic, on a path its build chose for the CPU:
# on some machines a distance printed to six decimals differs from pgvector's by one in the last (0.014104
# against 0.014103, seen on an AMD EPYC machine). The rows, their order and every other value may not.
DISTANCE_ROUNDING = Decimal("0.000002")


def assert_alike(after: list[tuple[object, ...]], before: list[tuple[object, ...]]) -> None:
    """The application's answers on the target: the same rows in the same order, numbers within the rounding."""
    assert len(after) == len(before), (after, before)
    for now, was in zip(after, before, strict=True):
        assert len(now) == len(was), (now, was)
        for value, expected in zip(now, was, strict=True):
            if isinstance(value, Decimal) and isinstance(expected, Decimal):
                assert abs(value - expected) <= DISTANCE_ROUNDING, (now, was)
            else:
                assert value == expected, (now, was)


@pytest.mark.parametrize("indexes", ["kept", "dropped first"])
@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild"])
@pytest.mark.parametrize("client", list(SCHEMAS))
async def test_a_client_librarys_schema_moves_to_the_real_ruvector_and_back(
    client: str, strategy: str, indexes: str, pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    params, conn = pg16
    schema = SCHEMAS[client]
    await create(conn, schema)
    vector_indexes = await vector_index_count(conn)
    if indexes == "dropped first":
        await drop_vector_indexes(conn)
    before = await snapshot(conn)
    answers = await as_the_application(conn, schema.search)
    resource = manifest("ruvector", strategy=strategy, backup={"enabled": strategy == "Rebuild"})

    status = await run(on_pg16(params, resource, tmp_path))

    if vector_indexes and indexes == "kept":
        assert status.phase is Phase.FAILED, status.message
        assert status.conditions[0].reason == Reason.UNMAPPED_INDEX
        assert "answered 0 with its index present" in status.message or "serves <#>" in status.message
        assert await snapshot(conn) == before
        return
    if client in USES_INNER_PRODUCT:
        assert status.phase is Phase.FAILED, status.message
        assert status.conditions[0].reason == Reason.BLOCKING_DEPENDENT
        assert "uses <#>" in status.message and "is 32 in ruvector 0.3.0 and -32 in pgvector" in status.message
        assert await snapshot(conn) == before
        return
    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows
    assert_alike(await as_the_application(conn, schema.search), answers)
    await assert_on_the_real_ruvector(conn)
    assert_proven(status)

    rolled = await run(on_pg16(params, resource, tmp_path, status=status, rollback=True))

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    assert await snapshot(conn) == before
    assert await as_the_application(conn, schema.search) == answers


@pytest.mark.parametrize("client", sorted(set(SCHEMAS) - USES_INNER_PRODUCT))
async def test_a_client_librarys_schema_moves_to_a_new_database_with_the_real_ruvector(
    client: str, pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    params, conn = pg16
    schema = SCHEMAS[client]
    await create(conn, schema)
    await drop_vector_indexes(conn)
    before = await snapshot(conn)
    answers = await as_the_application(conn, schema.search)
    await conn.close()
    resource = manifest(
        "ruvector", strategy="Replicate", backup={"enabled": False}, replicate={"keepOldFor": "0s", "dropOld": True}
    )

    status = await run(on_pg16(params, resource, tmp_path), reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    assert_proven(status)
    conn = await session(params)
    try:
        assert (await snapshot(conn)).rows == before.rows
        assert_alike(await as_the_application(conn, schema.search), answers)
        await assert_on_the_real_ruvector(conn)
    finally:
        await conn.close()
    # keepOldFor has passed: the old database and its replication go (the server's workers are few)
    assert (await run(on_pg16(params, resource, tmp_path))).phase is Phase.SUCCEEDED


async def test_the_real_ruvectors_inner_product_answers_by_plan_and_the_engine_measures_it(
    pg16: tuple[ConnectionParams, asyncpg.Connection],
) -> None:
    # docs/ruvector-findings.md, "<#> is the inner product": the reproduction, held against the release
    _, conn = pg16
    await conn.execute(
        "CREATE EXTENSION ruvector; CREATE TABLE t (id int, e ruvector(3));"
        " INSERT INTO t VALUES (1, '[1,0,0]'), (2, '[-1,0,0]'), (3, '[0,1,0]')"
    )
    assert await conn.fetchval("SELECT '[1,2,3]'::ruvector <#> '[4,5,6]'") == 32  # pgvector: -32
    sequential = [r["id"] for r in await conn.fetch("SELECT id FROM t ORDER BY e <#> '[1,0,0]' LIMIT 1")]
    await conn.execute("CREATE INDEX ON t USING hnsw (e ruvector_ip_ops)")
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        indexed = [r["id"] for r in await conn.fetch("SELECT id FROM t ORDER BY e <#> '[1,0,0]' LIMIT 1")]
    assert (sequential, indexed) == ([2], [1])  # the least similar without the index, the most with it
    with pytest.raises(asyncpg.PostgresError, match="CREATE INDEX CONCURRENTLY is not supported safely yet"):
        await conn.execute("CREATE INDEX CONCURRENTLY ON t USING hnsw (e ruvector_l2_ops)")

    surface = await discover(conn, "ruvector", None, collides=True)

    assert [operator for operator, _ in surface.operators_otherwise] == ["<#>"]
    assert surface.summary()["operatorsOtherwise"] == {"<#>": surface.operators_otherwise[0][1]}
    assert [method for method, _ in surface.methods_failing] == ["hnsw", "ruivfflat"]
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'vmig_index_check%'") == 0


async def test_the_real_ruvectors_hnsw_makes_count_of_the_table_answer_zero(
    pg16: tuple[ConnectionParams, asyncpg.Connection],
) -> None:
    # docs/ruvector-findings.md, "count(*) answers 0": with the planner's defaults
    _, conn = pg16
    await conn.execute(
        "CREATE EXTENSION ruvector; CREATE TABLE items (id int PRIMARY KEY, embedding ruvector(64));"
        " INSERT INTO items SELECT g, ('[' || (SELECT string_agg(random()::text, ',') FROM generate_series(1, 64)"
        " WHERE g > 0) || ']')::ruvector FROM generate_series(1, 2000) g;"
        " CREATE INDEX items_l2 ON items USING hnsw (embedding ruvector_l2_ops); ANALYZE items"
    )

    assert await conn.fetchval("SELECT count(*) FROM items") == 0
    assert "Index Scan on items_l2" in "\n".join(r[0] for r in await conn.fetch("EXPLAIN SELECT count(*) FROM items"))
    assert len(await conn.fetch("SELECT * FROM items")) == 2000  # read otherwise: all there
    assert await conn.fetchval("SELECT count(id) FROM items") == 2000
    await conn.execute("DROP INDEX items_l2")
    assert await conn.fetchval("SELECT count(*) FROM items") == 2000


async def test_the_real_ruvectors_ivfflat_drops_rows_of_an_exhaustive_search_and_an_ivfflat_index_is_refused(
    pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    # docs/ruvector-findings.md, "ruivfflat": one list, so the search is exhaustive, and still
    params, conn = pg16
    await conn.execute(
        "CREATE SCHEMA ru; CREATE EXTENSION ruvector SCHEMA ru; CREATE TABLE ru.t (id int, e ru.ruvector(3));"
        " INSERT INTO ru.t SELECT i, ('[' || cos(i)::real || ',' || sin(i)::real || ',0]')::ru.ruvector"
        " FROM generate_series(1, 100) i;"
        " CREATE INDEX ON ru.t USING ruivfflat (e ru.ruvector_l2_ops) WITH (lists = 1)"
    )
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL ruvector.probes = 1")
        rows = await conn.fetch("SELECT id FROM ru.t ORDER BY e OPERATOR(ru.<->) '[1,0,0]' LIMIT 50")
    assert len(rows) < 50  # one row here; ten of 2,000 (its scan keeps k = 10: src/index/ivfflat_am.rs)
    await conn.execute("DROP SCHEMA ru CASCADE")  # and the extension in it
    await conn.execute(SHOP)
    await conn.execute("CREATE INDEX items_ivf ON items USING ivfflat (embedding vector_l2_ops) WITH (lists = 4)")
    before = await snapshot(conn)

    status = await run(on_pg16(params, manifest("ruvector"), tmp_path))

    assert status.phase is Phase.FAILED
    assert status.conditions[0].reason == Reason.UNMAPPED_INDEX
    assert "index public.items_ivf" in status.message and "its ruivfflat answered otherwise" in status.message
    assert "answered 0 with its index present" in status.message
    assert await snapshot(conn) == before


async def test_creating_the_real_ruvector_needs_a_superuser_though_its_control_file_says_otherwise(
    pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    # docs/ruvector-findings.md, "superuser = false": the application's role as CloudNativePG makes it
    params, conn = pg16
    await conn.execute(
        f"CREATE ROLE vmig_app LOGIN SUPERUSER; GRANT CREATE ON DATABASE {params.dbname} TO vmig_app;"
        " ALTER SCHEMA public OWNER TO vmig_app"
    )
    async with conn.transaction():  # the role owns pgvector and the tables, then is a superuser no more
        await conn.execute("SET LOCAL ROLE vmig_app")
        await conn.execute(SHOP)
    await conn.execute("ALTER ROLE vmig_app NOSUPERUSER")
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE vmig_app")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for language c"):
            await conn.execute("CREATE SCHEMA elsewhere; CREATE EXTENSION ruvector SCHEMA elsewhere")
    flags = await conn.fetchrow(
        "SELECT superuser, trusted FROM pg_available_extension_versions WHERE name = 'ruvector' AND version = '0.3.0'"
    )
    assert (flags["superuser"], flags["trusted"]) == (False, True)
    before = await snapshot(conn)
    application = dataclasses.replace(params, user="vmig_app")

    alone = await run(on_pg16(application, manifest("ruvector"), tmp_path))

    assert alone.phase is Phase.FAILED
    assert alone.conditions[0].reason == Reason.INSUFFICIENT_PRIVILEGE
    assert "permission denied for language c" in alone.message and "--admin-database-url" in alone.message
    assert await snapshot(conn) == before

    with_admin = await run(on_pg16(application, manifest("ruvector"), tmp_path / "admin", admin=params))

    assert with_admin.phase is Phase.SUCCEEDED, with_admin.message
    await assert_on_the_real_ruvector(conn)
    assert await conn.fetchval("SELECT relowner::regrole::text FROM pg_class WHERE relname = 'items'") == "vmig_app"


async def test_the_rich_fixture_moves_to_the_real_ruvector_with_its_settings_check_and_view_and_back(
    pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    # tests/scenarios.py's rich fixture, less its L1 index (pgvector 0.6.2 has no L1 HNSW, RuVector no L1
    # class) and its vector indexes (finding 1), plus a CHECK that calls pgvector's vector_dims
    params, conn = pg16
    schema = "\n".join(line for line in RICH_SCHEMA.splitlines() if "vector_l1_ops" not in line)
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'vmig_test_reader'"):
        schema = schema.replace("CREATE ROLE vmig_test_reader;", "")
    await conn.execute(schema)
    await conn.execute(DB_SETTINGS.format(database=params.dbname))
    await drop_vector_indexes(conn)
    await conn.execute("ALTER TABLE items ADD CONSTRAINT items_dims CHECK (vector_dims(embedding) = 8)")
    before = await snapshot(conn)

    status = await run(on_pg16(params, manifest("ruvector"), tmp_path))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows
    await assert_on_the_real_ruvector(conn)
    # RuVector's vector_dims takes real[]: the CHECK calls its ruvector_dims, which takes ruvector
    check = await conn.fetchval("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'items_dims'")
    assert "ruvector_dims(embedding) = 8" in check
    settings = await conn.fetchval(
        "SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()) AND setrole = 0"
    )
    assert {"ruvector.hnsw_ef_search=80", "ruvector.probes=4"} <= set(settings)
    assert await conn.fetchval("SELECT count(*) FROM category_a") == 200
    assert await conn.fetchval("SELECT has_table_privilege('vmig_test_reader', 'category_a', 'SELECT')")
    assert any("<#> computes otherwise in ruvector" in warning for warning in status.warnings)
    assert_proven(status)

    rolled = await run(on_pg16(params, manifest("ruvector"), tmp_path, status=status, rollback=True))

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    assert await snapshot(conn) == before


def test_the_demo_migrates_to_the_real_ruvector_and_says_so(
    ruvector_server: RealRuvectorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--target", "real", "--rows", "600", "--workdir", str(tmp_path)])

    said = capsys.readouterr().out
    assert code == 0, said
    assert "The migration target here is the real RuVector" in said and "STAND-IN" not in said
    assert "600 rows in 4 table(s) equal before and after" in said
    assert "The target was the real RuVector: ruvector-postgres 2.0.6" in said


async def test_post_migration_registration_is_skipped_by_name_because_the_real_ruvector_has_none(
    pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    # the seed's ruvector_register_collection, tiers and integrity: RuVector 2.0.6 has none of them
    params, conn = pg16
    await conn.execute(SHOP)
    spec = {"registerCollections": True, "tiers": {"hotHours": 12}, "integrityPolicy": {}}
    resource = manifest("ruvector", backup={"enabled": False}, postMigration=spec)

    status = await run(on_pg16(params, resource, tmp_path))

    assert status.phase is Phase.SUCCEEDED, status.message
    for function in ("ruvector_register_collection", "ruvector_set_tiers", "ruvector_integrity_policy_set"):
        assert f"postMigration: target ruvector has no {function}(); skipped" in status.warnings
        assert await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname = $1", function) == 0


@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild", "Replicate"])
async def test_a_partitioned_table_moves_to_the_real_ruvector_and_back(
    strategy: str, pg16: tuple[ConnectionParams, asyncpg.Connection], tmp_path: Path
) -> None:
    # RuVector's name for its HNSW collides with pgvector's: the tree's column goes through real[] and back,
    # converted in every partition by one ALTER TABLE on the root. No vector index: RuVector's HNSW is refused.
    from tests.test_partitions import PARTITIONED, column_types, partition_tree

    params, conn = pg16
    await conn.execute(PARTITIONED)
    await drop_vector_indexes(conn)
    tree, rows = await partition_tree(conn), (await snapshot(conn)).rows
    await conn.close()
    once = {"replicate": {"keepOldFor": "0s"}} if strategy == "Replicate" else {}
    resource = manifest("ruvector", strategy=strategy, backup={"enabled": strategy == "Rebuild"}, **once)

    status = await run(on_pg16(params, resource, tmp_path), reconnect_for=30)

    assert status.phase is Phase.SUCCEEDED, status.message
    assert_proven(status)
    conn = await session(params)
    try:
        await assert_on_the_real_ruvector(conn)
        assert await partition_tree(conn) == tree
        assert set((await column_types(conn)).values()) == {"ruvector(4)"}
        assert (await snapshot(conn)).rows == rows
    finally:
        await conn.close()
    if strategy == "Replicate":
        return  # its old database is gone (keepOldFor 0s); its rollback is proven above with the shop

    rolled = await run(on_pg16(params, resource, tmp_path, status=status, rollback=True))

    assert rolled.phase is Phase.ROLLED_BACK, rolled.message
    conn = await session(params)
    try:
        assert await partition_tree(conn) == tree
        assert set((await column_types(conn)).values()) == {"vector(4)"}
        assert (await snapshot(conn)).rows == rows
    finally:
        await conn.close()
