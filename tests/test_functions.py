"""Functions that use the vector types are carried across and still work for the application.

The schema is Supabase's documented pattern (a ``documents`` table and its ``match_documents``
SQL function), a plpgsql variant of the kind older guides show, and a procedure; after the
migration each is called as the application's role, which is what the application does.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.scenarios import manifest, migration, snapshot
from vector_migration.database.sql import ConnectionParams
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

SUPABASE = """
CREATE EXTENSION vector;
CREATE TABLE documents (id bigserial PRIMARY KEY, content text, embedding vector(3));
INSERT INTO documents (content, embedding)
SELECT 'doc ' || i, ARRAY[cos(i), sin(i), (i % 7) / 7.0]::real[]::vector FROM generate_series(1, 200) i;
CREATE INDEX ON documents USING hnsw (embedding vector_cosine_ops);

-- Supabase's documented search function (supabase.com/docs/guides/ai/vector-columns)
create or replace function match_documents (
  query_embedding vector(3),
  match_threshold float,
  match_count int
)
returns table (id bigint, content text, similarity float)
language sql stable
as $$
  select documents.id, documents.content, 1 - (documents.embedding <=> query_embedding) as similarity
  from documents
  where 1 - (documents.embedding <=> query_embedding) > match_threshold
  order by (documents.embedding <=> query_embedding) asc
  limit match_count;
$$;
COMMENT ON FUNCTION match_documents(vector, float, int) IS 'semantic search';

-- plpgsql: PostgreSQL records no dependency on the types its body names
CREATE FUNCTION nearest_ids(query text, how_many int) RETURNS SETOF bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
  probe vector(3);
BEGIN
  probe := query::vector(3);
  RETURN QUERY SELECT d.id FROM documents d ORDER BY d.embedding <=> probe LIMIT how_many;
END $$;

CREATE PROCEDURE add_document(body text, vec vector) LANGUAGE sql AS $$
  INSERT INTO documents (content, embedding) VALUES (body, vec)
$$;

CREATE ROLE vmig_fn_app;
GRANT SELECT, INSERT ON documents TO vmig_fn_app;
GRANT USAGE ON SEQUENCE documents_id_seq TO vmig_fn_app;
REVOKE EXECUTE ON FUNCTION match_documents(vector, float, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION match_documents(vector, float, int) TO vmig_fn_app;
"""


async def as_the_application(conn: asyncpg.Connection, sql: str) -> list[asyncpg.Record]:
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE vmig_fn_app")
        return await conn.fetch(sql)


async def create_supabase(conn: asyncpg.Connection) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'vmig_fn_app'")
    await conn.execute(SUPABASE.replace("CREATE ROLE vmig_fn_app;", "") if exists else SUPABASE)


@pytest.mark.parametrize("target", ["ruvector_standin", "ruvector_script_standin", "ruvector_v2_standin"])
@pytest.mark.parametrize("strategy", ["InPlace", "Rebuild"])
async def test_supabase_match_documents_still_answers_after_the_migration(
    target: str, strategy: str, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path, tmp_path: Path
) -> None:
    await create_supabase(conn)
    search = "SELECT id, round(similarity::numeric, 6) AS s FROM match_documents('[1,0,0]', 0.5, 5)"
    before = await as_the_application(conn, search)
    nearest_before = await conn.fetch("SELECT * FROM nearest_ids('[0,1,0]', 3)")
    assert len(before) == 5

    status = await run(migration(database, manifest(target, strategy=strategy), backup_dir, scratch=tmp_path / "s"))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await as_the_application(conn, search) == before
    assert await conn.fetch("SELECT * FROM nearest_ids('[0,1,0]', 3)") == nearest_before
    await conn.execute("CALL add_document('new', '[0,0,1]')")
    assert await conn.fetchval("SELECT count(*) FROM documents") == 201
    argument = await conn.fetchval(
        "SELECT pg_catalog.format_type(proargtypes[0], NULL) FROM pg_proc WHERE proname = 'match_documents'"
    )
    assert "vector" not in argument.removeprefix("ruvector") or target == "ruvector_v2_standin", argument
    assert await conn.fetchval("SELECT obj_description('match_documents'::regproc, 'pg_proc')") == "semantic search"
    public_can = await conn.fetchval("SELECT has_function_privilege('public', 'match_documents'::regproc, 'EXECUTE')")
    assert public_can is False  # the revoke was carried too
    carried = {d.name: d.handling for d in status.inventory.dependents if d.handling == "recreated for the target"}
    assert len(carried) == 3


async def test_parallel_carries_the_functions_at_the_finalize_and_a_rollback_gives_them_back(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_supabase(conn)
    search = "SELECT id, round(similarity::numeric, 6) AS s FROM match_documents('[1,0,0]', 0.5, 5)"
    before = await as_the_application(conn, search)
    resource = manifest(strategy="Parallel", backup={"enabled": False}, parallel={"keepOldFor": "1h"})

    status = await run(migration(database, resource, backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await as_the_application(conn, search) == before
    signature = "SELECT pg_get_function_identity_arguments('match_documents'::regproc)"
    assert "ruvector" in await conn.fetchval(signature)
    assert await conn.fetchval("SELECT obj_description('match_documents'::regproc, 'pg_proc')") == "semantic search"
    await conn.execute("CALL add_document('new', '[0,0,1]')")  # on the migrated table, mirrored to the old one

    m = migration(database, resource, backup_dir, rollback=True)
    m.status = status.model_copy(deep=True)
    rolled_back = await run(m)

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    assert await as_the_application(conn, search) == before
    assert "ruvector" not in await conn.fetchval(signature)
    assert await conn.fetchval("SELECT count(*) FROM documents") == 201
    public_can = await conn.fetchval("SELECT has_function_privilege('public', 'match_documents'::regproc, 'EXECUTE')")
    assert public_can is False


async def test_a_plpgsql_body_naming_the_type_where_it_is_no_type_is_refused_by_name(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_supabase(conn)
    await conn.execute(
        """
        CREATE FUNCTION dynamic_search() RETURNS int LANGUAGE plpgsql AS $$
        BEGIN RETURN (SELECT count(*) FROM pg_type WHERE typname = 'x' || vector); END $$;
        """
    )

    status = await run(migration(database, manifest(backup={"enabled": False}), backup_dir))

    assert status.phase is Phase.FAILED
    assert status.conditions[0].reason == Reason.BLOCKING_DEPENDENT
    assert "dynamic_search" in status.message and "not plainly a type" in status.message
    assert await conn.fetchval("SELECT extname FROM pg_extension WHERE extname = 'vector'") == "vector"


async def test_a_rollback_carries_the_functions_back(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_supabase(conn)
    search = "SELECT id, round(similarity::numeric, 6) AS s FROM match_documents('[1,0,0]', 0.5, 5)"
    before = await as_the_application(conn, search)
    resource = manifest(backup={"enabled": False})
    assert (await run(migration(database, resource, backup_dir))).phase is Phase.SUCCEEDED

    status = await run(migration(database, resource, backup_dir, rollback=True))

    assert status.phase is Phase.ROLLED_BACK, status.message
    assert await as_the_application(conn, search) == before
    argument = await conn.fetchval(
        "SELECT pg_catalog.format_type(proargtypes[0], NULL) FROM pg_proc WHERE proname = 'match_documents'"
    )
    assert argument == "vector"
    assert await conn.fetch("SELECT * FROM nearest_ids('[0,1,0]', 3)")


@pytest.mark.parametrize("target", ["ruvector_standin", "ruvector_script_standin"])
async def test_a_column_default_holding_a_vector_is_set_again_for_the_target(
    target: str, database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await conn.execute(
        """
        CREATE EXTENSION vector;
        CREATE TABLE notes (id int PRIMARY KEY, embedding vector(3) DEFAULT '[0,0,1]'::vector(3) NOT NULL);
        INSERT INTO notes VALUES (1, '[1,2,3]');
        """
    )

    status = await run(migration(database, manifest(target, backup={"enabled": False}), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    await conn.execute("INSERT INTO notes (id) VALUES (2)")
    assert await conn.fetchval("SELECT embedding::text FROM notes WHERE id = 2") == "[0,0,1]"
    default = await conn.fetchval(
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'notes'::regclass"
    )
    assert "vector" not in default.replace("ruvector", ""), default
    assert "public.notes.embedding" in {d.name for d in status.inventory.dependents}


async def test_pgvector_functions_called_in_a_body_become_the_targets_and_answer_the_same(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_supabase(conn)
    await conn.execute(
        """
        CREATE FUNCTION closest(query vector) RETURNS bigint LANGUAGE sql STABLE AS $$
          SELECT id FROM documents ORDER BY l2_distance(embedding, query), id LIMIT 1
        $$;
        """
    )
    before = await conn.fetchval("SELECT closest('[0,1,0]')")

    status = await run(migration(database, manifest(backup={"enabled": False}), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval("SELECT closest('[0,1,0]')") == before
    body = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'closest'")
    assert "ruvector_l2_distance" in body


async def test_a_plpgsql_body_calling_pgvectors_functions_calls_the_targets_and_a_rollback_gives_it_back(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_supabase(conn)
    await conn.execute(
        """
        CREATE FUNCTION farthest(query vector) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
        DECLARE
          dims int := vector_dims(query);
          probe vector(3);
        BEGIN
          IF dims <> 3 THEN RAISE EXCEPTION 'wrong dimension %', dims; END IF;
          probe := query::vector(3);
          RETURN (SELECT id FROM documents ORDER BY public.l2_distance(embedding, probe) DESC, id LIMIT 1);
        END $$;
        """
    )
    before = await conn.fetchval("SELECT farthest('[0,1,0]')")

    status = await run(migration(database, manifest(backup={"enabled": False}), backup_dir))

    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval("SELECT farthest('[0,1,0]')") == before
    body = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'farthest'")
    assert '"ruvector_dims"(query)' in body and '"ruvector_l2_distance"(embedding, probe)' in body

    rolled_back = await run(migration(database, manifest(backup={"enabled": False}), backup_dir, rollback=True))

    assert rolled_back.phase is Phase.ROLLED_BACK, rolled_back.message
    assert await conn.fetchval("SELECT farthest('[0,1,0]')") == before
    assert "ruvector" not in await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'farthest'")


async def test_a_carried_body_that_would_not_resolve_on_the_target_fails_the_swap_instead_of_its_first_call(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_supabase(conn)
    # The signature is rewritten (vector -> ruvector); the body adds two vectors with pgvector's `+`,
    # an operator RuVector's published surface does not have: created as it is, the function would
    # fail at its first call, after a migration that reported success.
    await conn.execute(
        """
        CREATE FUNCTION drifted(query vector) RETURNS bigint LANGUAGE sql STABLE AS $$
          SELECT id FROM documents ORDER BY (embedding + query) <-> query LIMIT 1
        $$;
        """
    )
    before = await snapshot(conn)

    status = await run(migration(database, manifest(backup={"enabled": False}), backup_dir))

    assert status.phase is Phase.FAILED
    assert "operator does not exist" in status.message and "rolled back" in status.message, status.message
    assert await snapshot(conn) == before
