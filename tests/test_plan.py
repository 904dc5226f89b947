"""The planner is a pure function of facts: tested as data, no database."""

from __future__ import annotations

from vector_migration.api import VectorMigrationSpec
from vector_migration.database.catalog import (
    InstalledExtension,
    SavedIndex,
    SavedSetting,
    ServerFacts,
    SourceInventory,
    VectorColumn,
)
from vector_migration.database.surface import TargetSurface
from vector_migration.database.target_objects import TargetOpclass, TargetType
from vector_migration.engine.conversion import build_plan

SERVER = ServerFacts(180006, "18.6", "shop", 1, "app", False, False)
PGVECTOR = InstalledExtension(10, "vector", "0.8.6", "public")


def inventory(*, settings: list[SavedSetting] | None = None) -> SourceInventory:
    column = VectorColumn("public", "docs", 100, "embedding", 2, "public", "vector", 384)
    index = SavedIndex(
        oid=200, schema="public", name="docs_embedding_idx", table_schema="public", table="docs",
        column="embedding", method="hnsw", method_owned_by_source=True, opclass_schema="public",
        opclass="vector_cosine_ops", ordering_operator="<=>", options=(("m", "16"), ("ef_construction", "64")),
        predicate=None, tablespace=None,
        definition="CREATE INDEX docs_embedding_idx ON public.docs USING hnsw (embedding public.vector_cosine_ops)",
    )  # fmt: skip
    return SourceInventory(
        server=SERVER,
        source=PGVECTOR,
        source_type_names={1: "vector"},
        casts=frozenset({("vector", "_float4"), ("_float4", "vector"), ("vector", "vector")}),
        columns=[column],
        indexes=[index],
        settings=settings or [],
    )


def surface(
    *,
    extension: str = "ruvector",
    collides: bool = False,
    casts: frozenset[tuple[str, str]] = frozenset(),
    settings: frozenset[str] = frozenset(),
    hnsw: str = "ruhnsw",
    type_name: str = "ruvector",
) -> TargetSurface:
    return TargetSurface(
        extension=extension,
        version="2.0.0",
        schema="public",
        types=(TargetType(1, "public", type_name, True),),
        methods=(hnsw,),
        opclasses=(
            TargetOpclass("public", "ruvector_l2_ops", hnsw, type_name, "<->", True),
            TargetOpclass("public", "ruvector_cosine_ops", hnsw, type_name, "<=>", False),
        ),
        operator_names=frozenset({"<->", "<=>"}),
        functions=frozenset(),
        settings=settings,
        shares_source_library=False,
        collides=collides,
        casts=casts,
    )


def test_the_direct_route_converts_beside_the_source_and_never_cascades() -> None:
    plan = build_plan(inventory(), surface(), VectorMigrationSpec(), target_schema="public", target_installed=False)

    steps = [s.step for s in plan.swap]
    assert plan.route == "direct"
    assert steps == [
        "create-target-extension", "lock", "drop-index", "convert-columns", "drop-source-extension", "build-index",
    ]  # fmt: skip
    sql = {s.step: s.sql for s in plan.swap}
    assert sql["convert-columns"] == (
        'ALTER TABLE "public"."docs" ALTER COLUMN "embedding" TYPE "public"."ruvector"(384) '
        'USING "embedding"::pg_catalog.text::"public"."ruvector"(384)'
    )
    assert sql["drop-source-extension"] == 'DROP EXTENSION "vector" RESTRICT'
    assert sql["build-index"] == (
        'CREATE INDEX "docs_embedding_idx" ON "public"."docs" USING "ruhnsw" '
        '("embedding" "public"."ruvector_cosine_ops") WITH ("ef_construction" = \'64\', "m" = \'16\')'
    )
    assert not any("CASCADE" in s.sql for s in plan.swap)


def test_colliding_names_convert_through_real_arrays_when_both_sides_cast() -> None:
    target = surface(
        extension="ruvector_v2", collides=True, hnsw="hnsw", type_name="vector",
        casts=frozenset({("_float4", "vector")}),
    )  # fmt: skip

    plan = build_plan(inventory(), target, VectorMigrationSpec(), target_schema="public", target_installed=False)

    assert plan.route == "intermediate"
    steps = [s.step for s in plan.swap]
    assert steps == [
        "lock", "drop-index", "convert-to-intermediate", "drop-source-extension", "create-target-extension",
        "convert-columns", "build-index",
    ]  # fmt: skip
    assert plan.swap[2].sql.endswith('TYPE pg_catalog.float4[] USING "embedding"::pg_catalog.float4[]')
    assert plan.conversions[0].cast_path == "real[]"


def test_settings_are_written_under_the_name_the_target_registers() -> None:
    facts = inventory(
        settings=[
            SavedSetting(None, True, "hnsw.ef_search", "100"),
            SavedSetting("reader", True, "ivfflat.probes", "7"),
        ]
    )
    target = surface(settings=frozenset({"ruvector.hnsw_ef_search"}))

    plan = build_plan(facts, target, VectorMigrationSpec(), target_schema="public", target_installed=False)

    carried = [s.sql for s in plan.swap if s.step == "carry-setting"]
    assert carried == ['ALTER DATABASE "shop" SET "ruvector"."hnsw_ef_search" = \'100\'']
    assert any("ivfflat.probes = 7 (role reader in database) has no counterpart" in w for w in plan.warnings)


def test_a_known_bad_concurrent_build_is_done_inside_the_swap() -> None:
    spec = VectorMigrationSpec.model_validate({"reindex": {"mode": "Concurrent"}})

    plan = build_plan(inventory(), surface(), spec, target_schema="public", target_installed=False)

    assert plan.concurrent_rebuilds == ()
    assert [s.step for s in plan.swap][-1] == "build-index"
    assert any("PR #716" in w for w in plan.warnings)
    other = build_plan(inventory(), surface(extension="ruvector_standin"), spec, target_schema="public",
                       target_installed=False)  # fmt: skip
    assert [r.definition.split(" ")[2] for r in other.concurrent_rebuilds] == ["CONCURRENTLY"]


def test_index_parameters_in_the_spec_override_saved_ones() -> None:
    spec = VectorMigrationSpec.model_validate({"reindex": {"parameters": {"m": 24, "lists": 100}}})

    plan = build_plan(inventory(), surface(), spec, target_schema="public", target_installed=False)

    assert "WITH (\"ef_construction\" = '64', \"m\" = '24')" in plan.rebuilds[0].definition  # lists is IVFFlat's


def test_the_plan_hash_depends_on_what_runs() -> None:
    spec = VectorMigrationSpec()
    first = build_plan(inventory(), surface(), spec, target_schema="public", target_installed=False)
    again = build_plan(inventory(), surface(), spec, target_schema="public", target_installed=False)
    elsewhere = build_plan(inventory(), surface(), spec, target_schema="vectors", target_installed=False)

    assert first.plan_hash == again.plan_hash
    assert elsewhere.plan_hash != first.plan_hash
    assert elsewhere.swap[0].sql == 'CREATE SCHEMA IF NOT EXISTS "vectors"'
