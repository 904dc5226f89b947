"""Properties over arbitrary input: identifiers through a real swap, derived names, specs."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.scenarios import manifest
from vector_migration.api import SpecError, parse_manifest
from vector_migration.database.sql import quote_ident
from vector_migration.demo import EmbeddedPostgres, create_database
from vector_migration.engine.context import Migration, RunInputs
from vector_migration.engine.runner import run
from vector_migration.strategies.parallel.names import MAX_IDENTIFIER_BYTES, derived_name

# PostgreSQL identifiers: any character but NUL, at most 63 bytes (longer ones are truncated by the
# server, which the operator must never rely on), with the awkward cases always in the mix.
AWKWARD = ["select", "user", "order", 'a"b', '"', "with space", "Mixed Case", "dot.ted", "ünï©ødé", "x" * 63]
IDENTIFIERS = st.one_of(
    st.sampled_from(AWKWARD),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=40),
).filter(lambda name: len(name.encode()) <= MAX_IDENTIFIER_BYTES)

_databases = itertools.count(1)


@given(base=IDENTIFIERS, other=IDENTIFIERS, suffix=st.sampled_from(["_vmig_shadow", "_pgvector_old", "_vmig"]))
def test_derived_names_fit_and_never_collide_after_truncation(base: str, other: str, suffix: str) -> None:
    derived = derived_name(base, suffix)
    assert len(derived.encode()) <= MAX_IDENTIFIER_BYTES
    assert derived.endswith(suffix)
    if other != base:
        assert derived_name(other, suffix) != derived


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=IDENTIFIERS, table=IDENTIFIERS, column=IDENTIFIERS, index=IDENTIFIERS)
async def test_arbitrary_identifiers_survive_planning_and_the_swap(
    postgres: EmbeddedPostgres, schema: str, table: str, column: str, index: str
) -> None:
    assume(index != table and not index.endswith("_pkey"))  # relations share a namespace with the key index
    assume(not schema.startswith("pg_"))  # PostgreSQL reserves the prefix for its own schemas (ReservedNameError)
    name = f"prop_{next(_databases)}"
    await create_database(postgres.params(), name)
    params = postgres.params(name)
    conn = await asyncpg.connect(host=params.host, user=params.user, database=params.dbname)
    try:
        relation = f"{quote_ident(schema)}.{quote_ident(table)}"
        key = "id" if column != "id" else "key"
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(f"CREATE TABLE {relation} ({key} int PRIMARY KEY, {quote_ident(column)} vector(3))")
        await conn.execute(
            f"INSERT INTO {relation} SELECT i, ARRAY[i, i * 2, i % 7]::real[]::vector FROM generate_series(1, 50) i"
        )
        await conn.execute(
            f"CREATE INDEX {quote_ident(index)} ON {relation} USING hnsw ({quote_ident(column)} vector_l2_ops)"
        )
        before = await conn.fetch(f"SELECT {key}, {quote_ident(column)}::text FROM {relation} ORDER BY 1")
        resource = manifest(backup={"enabled": False}, verify={"sampleQueries": 5, "k": 3})

        status = await run(Migration(RunInputs("properties", resource.spec, params)))

        assert status.phase.value == "Succeeded", status.message
        after = await conn.fetch(f"SELECT {key}, {quote_ident(column)}::text FROM {relation} ORDER BY 1")
        assert after == before
        method = await conn.fetchval(
            "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            schema,
            index,
        )
        assert method == "ruhnsw"
    finally:
        await conn.close()


# Fields by their manifest path, and values of every JSON shape: each manifest is either valid or
# refused with a message naming the field.
FIELDS = [
    ("strategy",), ("approval",), ("lockTimeout",), ("statementTimeout",), ("dryRun",), ("tables",),
    ("backup", "enabled"), ("backup", "scope"), ("verify", "k"), ("verify", "maxRecallDrop"),
    ("verify", "sampleQueries"), ("reindex", "mode"), ("reindex", "parameters"), ("parallel", "batchSize"),
    ("parallel", "keepOldFor"), ("cutover", "steps"), ("target", "extension"), ("target", "schema"),
    ("rollback", "onFailure"), ("unknownField",), ("verify", "unknownField"),
]  # fmt: skip
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), JSON_VALUES), min_size=1, max_size=3))
def test_every_spec_is_valid_or_refused_naming_the_field(edits: list[tuple[tuple[str, ...], Any]]) -> None:
    spec: dict[str, Any] = {"target": {"extension": "ruvector"}}
    for path, value in edits:
        node = spec
        for part in path[:-1]:
            child = node.get(part)
            node[part] = child = child if isinstance(child, dict) else {}
            node = child
        node[path[-1]] = value
    document = {"apiVersion": "ruvector.dev/v1alpha1", "kind": "VectorMigration", "metadata": {"name": "p"}}

    try:
        parse_manifest({**document, "spec": spec})
    except SpecError as error:
        message = str(error)
        assert "spec." in message, message
        assert any(f"spec.{'.'.join(path)}" in message or f"spec.{path[0]}" in message for path, _ in edits), message
