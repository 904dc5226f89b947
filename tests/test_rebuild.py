"""Rebuild: every table exported with COPY, emptied, converted, imported into fresh storage, in one transaction."""

from __future__ import annotations

import struct
from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import (
    condition,
    create_rich_database,
    fail_every,
    index_facts,
    manifest,
    migration,
    parse_vector,
    snapshot,
)
from vector_migration.database.sql import ConnectionParams
from vector_migration.database.table_copy import COPY_TEXT
from vector_migration.engine.runner import run
from vector_migration.phases import checklist
from vector_migration.vocabulary import Phase, Reason

# What Rebuild must carry that a plain COPY round trip would lose or change: an application
# trigger (must not fire for rows the table already held), a disabled trigger (stays disabled),
# an ALWAYS trigger (keeps its mode), an identity column and its sequence, a generated column,
# an outgoing foreign key, a grant, and the bloat that a rebuild is chosen to shed.
APPLICATION_TABLE = """
CREATE TABLE shelves (id int PRIMARY KEY, name text);
INSERT INTO shelves SELECT i, 'shelf ' || i FROM generate_series(1, 5) i;
CREATE TABLE docs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  shelf int REFERENCES shelves (id),
  body text,
  body_length int GENERATED ALWAYS AS (length(body)) STORED,
  touched_at timestamptz NOT NULL DEFAULT '2020-01-01',
  embedding vector(8)
);
INSERT INTO docs (shelf, body, embedding)
SELECT 1 + i % 5, repeat('x', i % 40), array_fill((i % 13)::real / 13, ARRAY[8])::vector
  FROM generate_series(1, 400) i;
UPDATE docs SET body = body || 'y';
UPDATE docs SET body = body || 'z';
CREATE INDEX docs_embedding ON docs USING hnsw (embedding vector_l2_ops);
CREATE TABLE audit (at timestamptz DEFAULT now(), doc bigint);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN NEW.touched_at := now(); RETURN NEW; END $$;
CREATE FUNCTION audit_insert() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN INSERT INTO audit (doc) VALUES (NEW.id); RETURN NULL; END $$;
CREATE TRIGGER docs_touch BEFORE INSERT OR UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER docs_audit AFTER INSERT ON docs FOR EACH ROW EXECUTE FUNCTION audit_insert();
CREATE TRIGGER docs_audit_off AFTER INSERT ON docs FOR EACH ROW EXECUTE FUNCTION audit_insert();
ALTER TABLE docs DISABLE TRIGGER docs_audit_off;
ALTER TABLE docs ENABLE ALWAYS TRIGGER docs_audit;
DO $$ BEGIN CREATE ROLE vmig_rebuild_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT SELECT ON docs TO vmig_rebuild_reader;
"""

TARGETS = ["ruvector_standin", "ruvector_script_standin", "ruvector_v2_standin"]


async def table_storage(conn: asyncpg.Connection, table: str) -> tuple[int, int]:
    """(relfilenode, heap bytes) of a table: a rebuild writes new storage, compact."""
    row = await conn.fetchrow(
        "SELECT pg_relation_filenode($1::regclass)::bigint AS node, pg_relation_size($1::regclass) AS bytes", table
    )
    return row["node"], row["bytes"]


async def triggers(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = 'docs'::regclass")
    return {r["tgname"]: r["tgenabled"] for r in rows if not r["tgname"].startswith("RI_")}


@pytest.mark.parametrize("target", TARGETS)
async def test_rebuild_moves_every_row_into_fresh_storage_and_keeps_the_table_whole(
    target: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    await conn.execute(APPLICATION_TABLE)
    before = await snapshot(conn)
    node_before, bytes_before = await table_storage(conn, "docs")
    triggers_before = await triggers(conn)
    scratch = tmp_path / "scratch"

    status = await run(migration(database, manifest(target, strategy="Rebuild"), tmp_path / "backups", scratch=scratch))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert condition(status, "Ready").status == "True"
    swapped = condition(status, "ExtensionSwapped")
    assert "bytes exported and imported (binary COPY)" in swapped.message
    after = await snapshot(conn)
    assert after.rows == before.rows  # every value, the generated column and touched_at included
    assert "vector" not in after.extensions and target in after.extensions
    node_after, bytes_after = await table_storage(conn, "docs")
    assert node_after != node_before and bytes_after < bytes_before  # written afresh, without the dead rows
    assert await conn.fetchval("SELECT count(*) FROM audit") == 0  # no trigger fired for the old rows
    assert await triggers(conn) == triggers_before  # each trigger back in its own mode
    assert await conn.fetchval("SELECT has_table_privilege('vmig_rebuild_reader', 'docs', 'SELECT')")
    assert await conn.fetchval(
        "SELECT convalidated FROM pg_constraint WHERE conrelid = 'docs'::regclass AND contype = 'f'"
    )
    # the identity continues after the imported rows, and the application's triggers fire again
    new_id = await conn.fetchval("INSERT INTO docs (shelf, body) VALUES (1, 'new') RETURNING id")
    assert new_id == 401
    assert await conn.fetchval("SELECT count(*) FROM audit") == 1
    facts = await index_facts(conn)
    assert facts["docs_embedding"][0] in ("ruhnsw", "hnsw") and facts["docs_embedding"][1].endswith("l2_ops")
    assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    verification = status.verification
    assert verification is not None and verification.passed
    assert all(t.checksum_before == t.checksum_after for t in verification.tables)
    assert not any(scratch.iterdir())  # the export files are gone


async def test_the_text_route_carries_the_same_rows(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A target whose binary format differs from pgvector's (RuVector's does) is fed through text;
    # every stand-in here sends pgvector's bytes, so the text route is chosen by hand.
    monkeypatch.setattr(checklist, "copy_format", lambda _mode: COPY_TEXT)
    await create_rich_database(conn)
    before = await snapshot(conn)

    status = await run(
        migration(database, manifest("ruvector_script_standin", strategy="Rebuild"), tmp_path / "b", scratch=tmp_path)
    )

    assert status.phase is Phase.SUCCEEDED, status.message
    assert "(text COPY)" in condition(status, "ExtensionSwapped").message
    assert (await snapshot(conn)).rows == before.rows


async def test_a_failure_after_the_import_brings_back_the_old_storage(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    # Raised by the first index build, which comes after every table was emptied and imported.
    await fail_every(conn, "CREATE INDEX", "injected failure after the import")
    before = await snapshot(conn)
    node_before, _ = await table_storage(conn, "items")

    status = await run(migration(database, manifest(strategy="Rebuild"), tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.SWAP_FAILED
    assert "rolled back, nothing changed" in status.message
    assert await snapshot(conn) == before
    assert (await table_storage(conn, "items"))[0] == node_before
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


async def test_tables_rebuild_cannot_empty_are_refused_with_what_to_do(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(
        """
        CREATE EXTENSION vector;
        CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));
        INSERT INTO items VALUES (1, '[1,2,3]');
        CREATE TABLE archived_items (archived_at date) INHERITS (items);
        """
    )
    before = await snapshot(conn)

    status = await run(migration(database, manifest(strategy="Rebuild"), tmp_path / "b", scratch=tmp_path))

    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.BLOCKING_DEPENDENT
    assert "table public.items cannot be rebuilt: it inherits or is inherited from" in status.message
    assert "use InPlace" in status.message
    assert await snapshot(conn) == before


async def test_a_table_other_tables_reference_is_rebuilt_and_their_keys_hold_again(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(
        """
        CREATE EXTENSION vector;
        CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));
        INSERT INTO items SELECT i, ARRAY[i, 1, 2]::real[]::vector FROM generate_series(1, 50) i;
        CREATE TABLE orders (id int PRIMARY KEY, item int REFERENCES items (id) ON DELETE CASCADE);
        INSERT INTO orders SELECT i, i FROM generate_series(1, 50) i;
        """
    )
    before = await snapshot(conn)
    key = "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'orders_item_fkey'"
    definition = await conn.fetchval(key)

    status = await run(migration(database, manifest(strategy="Rebuild"), tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert (await snapshot(conn)).rows == before.rows
    assert await conn.fetchval(key) == definition
    validated = await conn.fetchval("SELECT convalidated FROM pg_constraint WHERE conname = 'orders_item_fkey'")
    assert validated is True
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute("INSERT INTO orders VALUES (100, 100)")
    await conn.execute("DELETE FROM items WHERE id = 1")  # ON DELETE CASCADE came back too
    assert await conn.fetchval("SELECT count(*) FROM orders") == 49


@pytest.mark.parametrize("target", ["ruvector_standin", "ruvector_script_standin"])
async def test_a_rebuild_is_rolled_back_on_request_to_the_rows_it_started_with(
    target: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    indexes_before = await index_facts(conn)
    resource = manifest(target, strategy="Rebuild")
    migrated = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s"))
    assert migrated.phase is Phase.SUCCEEDED, migrated.message

    status = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s", rollback=True))

    assert status.phase is Phase.ROLLED_BACK, status.message
    assert (condition(status, "Ready").status, condition(status, "Ready").reason) == ("True", "RollbackRequested")
    assert "every table equals its pre-migration checksum" in status.message
    after = await snapshot(conn)
    assert (after.rows, after.views) == (before.rows, before.views)
    assert await index_facts(conn) == indexes_before
    assert "vector" in after.extensions and target not in after.extensions


# A halfvec column the stand-ins have no 16-bit type for, with an HNSW index on it, beside a
# plain vector column that keeps the default mapping.
HALF_PRECISION_TABLE = """
CREATE EXTENSION vector;
CREATE TABLE notes (id int PRIMARY KEY, small halfvec(4), full_size vector(4));
INSERT INTO notes SELECT i, ARRAY[i / 7.0, 0.1, -2.5, 1e-3 * i]::real[]::halfvec, ARRAY[i, 1, 2, 3]::real[]::vector
  FROM generate_series(1, 300) i;
CREATE INDEX notes_small ON notes USING hnsw (small halfvec_l2_ops);
"""
HALF_INTO_FULL = {"columnTypes": [{"table": "public.notes", "column": "small", "type": "ruvector"}]}


async def column_types(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
        " WHERE attrelid = 'notes'::regclass AND attnum > 0 AND NOT attisdropped"
    )
    return {r["attname"]: r["type"] for r in rows}


def as_float32(text: str) -> tuple[float, ...]:
    values = parse_vector(text) or ()
    return struct.unpack(f"{len(values)}f", struct.pack(f"{len(values)}f", *values))


async def values_as_floats(conn: asyncpg.Connection) -> dict[int, tuple[tuple[float, ...], ...]]:
    """Each row's vectors as the 32-bit floats they print, whatever their type."""
    rows = await conn.fetch("SELECT id, small::text, full_size::text FROM notes ORDER BY id")
    return {r["id"]: (as_float32(r["small"]), as_float32(r["full_size"])) for r in rows}


@pytest.mark.parametrize(
    ("strategy", "spelling"),
    [("Rebuild", "rebuild"), ("Rebuild", "spec"), ("InPlace", "spec"), ("Parallel", "spec")],
)
async def test_every_strategy_gives_a_column_the_type_the_spec_names_and_a_rollback_gives_back_its_own(
    strategy: str, spelling: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(HALF_PRECISION_TABLE)
    values_before = await values_as_floats(conn)
    resource = manifest(strategy=strategy, **({"rebuild": HALF_INTO_FULL} if spelling == "rebuild" else HALF_INTO_FULL))

    status = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await column_types(conn) == {"id": "integer", "small": "ruvector(4)", "full_size": "ruvector(4)"}
    assert await values_as_floats(conn) == values_before
    assert (await index_facts(conn))["notes_small"][:2] == ("ruhnsw", "ruvector_l2_ops")
    assert status.verification is not None
    assert [(t.rows_before, t.checksum_before) for t in status.verification.tables] == [
        (t.rows_after, t.checksum_after) for t in status.verification.tables
    ]

    rolled_back = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s", rollback=True))

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    promise = "no write lost" if strategy == "Parallel" else "every table equals its pre-migration checksum"
    assert promise in rolled_back.message
    assert await column_types(conn) == {"id": "integer", "small": "halfvec(4)", "full_size": "vector(4)"}
    assert await values_as_floats(conn) == values_before
    assert (await index_facts(conn))["notes_small"][:2] == ("hnsw", "halfvec_l2_ops")


@pytest.mark.parametrize(
    ("column_type", "refusal"),
    [
        (
            {"table": "notes", "column": "full_size", "type": "halfvec"},
            "columnTypes: column public.notes.full_size is vector, and halfvec would not hold every one "
            "of its values exactly",
        ),
        (
            {"table": "notes", "column": "small", "type": "rusparsevec"},
            "columnTypes: column public.notes.small is halfvec, and rusparsevec would not hold every one "
            "of its values exactly",
        ),
        (
            {"table": "notes", "column": "small", "type": "ruhalfvec"},
            "column public.notes.small: columnTypes asks for type ruhalfvec, which target extension "
            "ruvector_standin does not offer (it offers ruvector)",
        ),
        (
            {"table": "notes", "column": "id", "type": "ruvector"},
            "columnTypes: public.notes.id is not a vector column being migrated",
        ),
    ],
)
async def test_a_column_type_that_would_round_or_names_no_vector_column_is_refused_before_anything_changes(
    column_type: dict[str, str], refusal: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(HALF_PRECISION_TABLE)
    before = await snapshot(conn)
    resource = manifest(strategy="Rebuild", columnTypes=[column_type])

    status = await run(migration(database, resource, tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.FAILED
    assert refusal in status.message
    assert await snapshot(conn) == before


@pytest.mark.parametrize("strategy", ["InPlace", "Parallel"])
async def test_a_halfvec_column_without_column_types_is_refused_with_the_option_that_widens_it(
    strategy: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(HALF_PRECISION_TABLE)
    before = await snapshot(conn)

    status = await run(migration(database, manifest(strategy=strategy), tmp_path / "b", scratch=tmp_path / "s"))

    assert status.phase is Phase.FAILED
    assert (
        "column public.notes.small is halfvec, which target extension ruvector_standin cannot hold (it offers "
        "ruvector); it holds every value exactly as ruvector: name it in columnTypes "
        "({table: public.notes, column: small, type: ruvector})" in status.message
    )
    assert await snapshot(conn) == before
