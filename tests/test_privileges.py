"""A table owner's code never runs with the migration's privileges.

The migration role is a superuser here, as in many installations. An ordinary role owns a vector
table and plants a function in its CHECK constraint and a materialized
view's query; called by a superuser, the function makes its owner a superuser
(first escaping any SET ROLE with RESET ROLE, and hiding its failures). Converting the table
evaluates all of it. Afterwards the owner must still be an ordinary role, and the migration done.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.scenarios import snapshot
from tests.test_command_line import MANIFEST, url, write
from vector_migration.cli import EXIT_OK, main
from vector_migration.database.sql import ConnectionParams

ATTACKER = "vmig_test_table_owner"

SETUP = f"""
CREATE EXTENSION IF NOT EXISTS vector;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ATTACKER}') THEN CREATE ROLE {ATTACKER} LOGIN; END IF;
END $$;
ALTER ROLE {ATTACKER} NOSUPERUSER;
GRANT CREATE ON SCHEMA public TO {ATTACKER};
"""
# What the table owner does in a session of its own.
HOSTILE_SCHEMA = f"""
CREATE FUNCTION public.escalate(value boolean) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
  BEGIN EXECUTE 'RESET ROLE'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE {ATTACKER} SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
  RETURN true;
END $fn$;
CREATE TABLE public.documents (
    id bigserial PRIMARY KEY,
    body text NOT NULL,
    embedding vector(3) CHECK (public.escalate(embedding IS NOT NULL))
);
INSERT INTO public.documents (body, embedding)
SELECT 'doc ' || g, ARRAY[g % 7, g % 5, g % 3]::real[]::vector FROM generate_series(1, 200) g;
CREATE INDEX documents_embedding ON public.documents USING hnsw (embedding vector_l2_ops);
CREATE MATERIALIZED VIEW public.document_vectors AS
    SELECT id, embedding, public.escalate(true) AS ok FROM public.documents;
"""


async def arrange_as_the_owner(conn: asyncpg.Connection, database: ConnectionParams) -> None:
    await conn.execute(SETUP)
    owner = await asyncpg.connect(host=database.host, user=ATTACKER, database=database.dbname)
    try:
        await owner.execute(HOSTILE_SCHEMA)
    finally:
        await owner.close()


async def migrate(database: ConnectionParams, tmp_path: Path, spec: dict[str, Any]) -> int:
    """`vector-migration migrate` with the test manifest and these spec fields; its exit code."""
    manifest = {**MANIFEST, "spec": {**MANIFEST["spec"], **spec}}  # type: ignore[dict-item]
    arguments = ["migrate", "-f", str(write(tmp_path, manifest)), "--database-url", url(database),
                 "--backup-dir", str(tmp_path / "backups"), "--scratch-dir", str(tmp_path / "scratch")]  # fmt: skip
    return await asyncio.to_thread(main, arguments)


async def is_superuser(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", ATTACKER))


@pytest.mark.parametrize(
    "how",
    [{"reindex": {"mode": "Atomic"}}, {"reindex": {"mode": "Concurrent"}}, {"strategy": "Rebuild"}],
    ids=["InPlace Atomic", "InPlace Concurrent", "Rebuild"],
)
async def test_a_table_owner_stays_an_ordinary_role_through_a_migration(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, how: dict[str, Any]
) -> None:
    await arrange_as_the_owner(conn, database)
    assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")  # we are a superuser
    before = await snapshot(conn)

    code = await migrate(database, tmp_path, how)

    assert code == EXIT_OK
    assert not await is_superuser(conn)
    assert (await snapshot(conn)).rows == before.rows
    owner = await conn.fetchval(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.document_vectors'::regclass"
    )
    assert owner == ATTACKER  # the re-created materialized view keeps its owner
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.documents'::regclass AND contype = 'c'"
        )
        == 1
    )
    await conn.execute(f"DROP OWNED BY {ATTACKER} CASCADE")


# The same owner's partial index, whose predicate the checklist's sampling would evaluate. A predicate
# must be IMMUTABLE, and an IMMUTABLE function may not change anything itself; it calls one that may.
PARTIAL_INDEX = """
CREATE FUNCTION public.looks_harmless(value boolean) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN RETURN public.escalate(value); END $fn$;
CREATE INDEX documents_recent ON public.documents USING hnsw (embedding vector_l2_ops)
    WHERE public.looks_harmless(id > 100);
"""


async def arrange_partial_index(database: ConnectionParams) -> None:
    owner = await asyncpg.connect(host=database.host, user=ATTACKER, database=database.dbname)
    try:
        await owner.execute(PARTIAL_INDEX)
    finally:
        await owner.close()


# Parallel, Rebuild and `plan` against the same owner are rows of the fault matrix:
# tests/reliability/test_hostile_world.py.
