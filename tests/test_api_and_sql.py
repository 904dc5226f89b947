"""The API models, name parsing and quoting: pure functions, tested as data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vector_migration.api import SpecError, TableSelection, parse_manifest, split_qualified_name
from vector_migration.database.sql import params_from_secret, parse_database_url, quote_ident, quote_literal
from vector_migration.kube.crd import crd_document, render_crd

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_what_a_user_expects() -> None:
    resource = parse_manifest(
        {"apiVersion": "ruvector.dev/v1alpha1", "kind": "VectorMigration", "metadata": {"name": "m"}}
    )
    spec = resource.spec
    assert (spec.strategy, spec.source.extension, spec.target.extension) == ("InPlace", "vector", "ruvector")
    assert spec.backup.enabled and spec.backup.scope == "Full"
    assert (spec.approval, spec.dry_run, spec.reindex.mode) == ("Automatic", False, "Atomic")
    assert (spec.verify.sample_queries, spec.verify.k, spec.verify.max_recall_drop) == (200, 10, 0.05)
    assert spec.rollback.on_failure == "Automatic"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"lockTimeout": "5 seconds"}, "spec.lockTimeout: Value error, '5 seconds' is not a duration; write"),
        ({"verify": {"k": 0}}, "spec.verify.k: Input should be greater than or equal to 1"),
        ({"reindex": {"parameters": {"m": "16; DROP TABLE x"}}}, "must be a number or a word"),
        ({"tables": [{"name": "a.b.c"}]}, "must be 'table' or 'schema.table'"),
        ({"strategy": "Magic"}, "spec.strategy: Input should be 'InPlace', 'Parallel', 'Rebuild' or 'Replicate'"),
    ],
)
def test_bad_specs_are_rejected_naming_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match="manifest") as error:
        parse_manifest(
            {"apiVersion": "ruvector.dev/v1alpha1", "kind": "VectorMigration", "metadata": {"name": "m"}, "spec": spec}
        )
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("items", ["items"]),
        ("Public.Items", ["public", "items"]),
        ('"Odd Schema"."Mixed ""Quoted"" Table"', ["Odd Schema", 'Mixed "Quoted" Table']),
        ('"dotted.name"', ["dotted.name"]),
    ],
)
def test_table_names_parse_as_postgresql_reads_them(text: str, parts: list[str]) -> None:
    assert split_qualified_name(text) == parts


def test_a_table_without_schema_is_in_public() -> None:
    assert TableSelection(name="items").qualified() == ("public", "items")


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("items", '"items"'), ('we"ird', '"we""ird"'), ("select", '"select"'), ("Ünïcode name", '"Ünïcode name"')],
)
def test_identifiers_are_always_quoted(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


def test_literals_double_their_quotes() -> None:
    assert quote_literal("it's") == "'it''s'"
    with pytest.raises(ValueError, match="NUL"):
        quote_literal("a\x00b")


def test_urls_and_cloudnativepg_secrets_parse_without_exposing_the_password() -> None:
    params = parse_database_url("postgresql://app:p%40ss@db.example:5433/shop?sslmode=require")
    assert (params.host, params.port, params.dbname, params.user, params.password) == (
        "db.example",
        5433,
        "shop",
        "app",
        "p@ss",
    )
    assert "p@ss" not in repr(params) and "p@ss" not in params.describe()
    secret = {"host": "cluster-rw", "port": "5432", "dbname": "app", "username": "app", "password": "x"}
    assert params_from_secret(secret).user == "app"
    assert params_from_secret({"uri": "postgresql://u:pw@h/d"}).password == "pw"


def test_the_committed_crd_matches_the_models() -> None:
    committed = (ROOT / "crds" / "vectormigration.yaml").read_text()
    assert committed == render_crd(), "crds/ is stale: run `make crd`"


def test_the_crd_is_structural_and_speaks_kubectl() -> None:
    document = crd_document()
    version = document["spec"]["versions"][0]
    assert document["spec"]["names"]["shortNames"] == ["vmig"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "Phase", "Ready", "Reason", "Message", "Age",
    ]  # fmt: skip
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(version["schema"])
    assert spec["properties"]["reindex"]["properties"]["mode"]["enum"] == ["Atomic", "Concurrent"]
    assert spec["properties"]["verify"]["properties"]["sampleQueries"]["default"] == 200
    assert yaml.safe_load(render_crd()) == document
