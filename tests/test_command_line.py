"""The command line as a user runs it: exit codes, one-line errors, --status-out, plan output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.reliability.harness import migration_backend, old_snapshot_held, plain, until
from tests.scenarios import create_rich_database, snapshot
from vector_migration.cli import EXIT_USAGE, main
from vector_migration.cli.commands import _parser as build_parser
from vector_migration.cli.operator_run import peering_of
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres

MANIFEST = {
    "apiVersion": "ruvector.dev/v1alpha1",
    "kind": "VectorMigration",
    "metadata": {"name": "cli"},
    "spec": {"target": {"extension": "ruvector_standin"}, "verify": {"sampleQueries": 10, "k": 5}},
}


def url(params: ConnectionParams) -> str:
    return f"postgresql://{params.user}@/{params.dbname}?host={params.host}"


def write(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def test_migrate_succeeds_and_writes_the_status(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    status_file = tmp_path / "status.json"

    code = await asyncio.to_thread(
        main,
        [
            "migrate", "-f", str(write(tmp_path, MANIFEST)), "--database-url", url(database),
            "--status-out", str(status_file), "--backup-dir", str(tmp_path / "b"),
        ],
    )  # fmt: skip

    assert code == 0
    status = json.loads(status_file.read_text())
    assert status["phase"] == "Succeeded"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert (await snapshot(conn)).rows == before.rows
    assert "equal before and after" in capsys.readouterr().err


async def test_plan_prints_the_statements_and_changes_nothing(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)

    code = await asyncio.to_thread(
        main, ["plan", "-f", str(write(tmp_path, MANIFEST)), "--database-url", url(database), "-o", "json"]
    )

    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    steps = [s["step"] for s in plan["swapTransaction"]]
    assert steps[:2] == ["create-target-extension", "lock"]
    assert steps.index("convert-columns") < steps.index("drop-source-extension") < steps.index("build-index")
    assert all("CASCADE" not in s["sql"] for s in plan["swapTransaction"])
    assert 'DROP EXTENSION "vector" RESTRICT' in [s["sql"] for s in plan["swapTransaction"]]
    assert plan["planHash"].startswith("sha256:")
    assert await snapshot(conn) == before


def test_an_unknown_field_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = {**MANIFEST, "spec": {**MANIFEST["spec"], "reindx": {"mode": "Atomic"}}}  # type: ignore[dict-item]

    code = main(["migrate", "-f", str(write(tmp_path, document)), "--database-url", "postgresql:///x"])

    assert code == 2
    assert "spec.reindx: unknown field" in capsys.readouterr().err


def test_the_demo_with_the_real_ruvector_but_no_build_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VMIG_RUVECTOR_PG_CONFIG", raising=False)

    assert main(["demo", "--target", "real", "--workdir", str(tmp_path)]) == EXIT_USAGE
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [
        "--target real: the real RuVector is not built here: run make ruvector and name its last line's path "
        "(--ruvector-pg-config, or VMIG_RUVECTOR_PG_CONFIG)"
    ]
    code = main(
        ["demo", "--target", "real", "--ruvector-pg-config", str(tmp_path / "nope"), "--workdir", str(tmp_path)]
    )
    assert code == EXIT_USAGE
    assert "is not make ruvector's pg_config" in capsys.readouterr().err
    assert not (tmp_path / "pgdata-real").exists()  # nothing started


def test_a_wrong_enum_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = {**MANIFEST, "spec": {**MANIFEST["spec"], "reindex": {"mode": "Sometimes"}}}  # type: ignore[dict-item]

    code = main(["migrate", "-f", str(write(tmp_path, document)), "--database-url", "postgresql:///x"])

    assert code == 2
    error = capsys.readouterr().err
    assert "spec.reindex.mode" in error and "'Atomic' or 'Concurrent'" in error


def test_an_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cret-Pa55word"
    code = main(
        [
            "migrate", "-f", str(write(tmp_path, MANIFEST)),
            "--database-url", f"postgresql://app:{secret}@/db?host={tmp_path}/no-such-socket-dir",
            "--status-out", str(tmp_path / "status.json"),
        ]
    )  # fmt: skip

    assert code == 1
    error = capsys.readouterr().err
    assert "cannot connect to app@" in error
    assert secret not in error
    assert secret not in (tmp_path / "status.json").read_text()


def test_the_database_url_can_come_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app@/db?host={tmp_path}/none")

    code = main(["plan", "-f", str(write(tmp_path, MANIFEST))])

    assert code == 1
    assert "cannot connect to app@" in capsys.readouterr().err


def test_a_rebuild_without_a_backup_is_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = {**MANIFEST, "spec": {**MANIFEST["spec"], "strategy": "Rebuild", "backup": {"enabled": False}}}

    code = main(["plan", "-f", str(write(tmp_path, manifest)), "--database-url", "postgresql://app@/db"])

    assert code == EXIT_USAGE
    assert "strategy Rebuild requires backup.enabled: true" in capsys.readouterr().err


async def test_migrate_reconnects_after_the_server_restarts_and_finishes_from_the_journal(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    manifest = {**MANIFEST, "spec": {**MANIFEST["spec"], "reindex": {"mode": "Concurrent"}}}  # type: ignore[dict-item]
    arguments = ["migrate", "-f", str(write(tmp_path, manifest)), "--database-url", url(database),
                 "--backup-dir", str(tmp_path / "b"), "--status-out", str(tmp_path / "status.json")]  # fmt: skip

    async with old_snapshot_held(database):  # the concurrent build waits for it: a window to restart in
        running = asyncio.create_task(asyncio.to_thread(main, arguments))
        await until(lambda: migration_backend(conn, "CREATE INDEX CONCURRENTLY%"))
        await asyncio.to_thread(postgres.restart)
    code = await asyncio.wait_for(running, timeout=120)

    assert code == 0, (tmp_path / "status.json").read_text()
    inspector = await plain(database)
    try:
        assert (await snapshot(inspector)).rows == before.rows
        assert await inspector.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    finally:
        await inspector.close()


async def test_check_says_in_sync_then_names_the_drift_when_a_client_installs_pgvector_again(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_rich_database(conn)
    manifest = str(write(tmp_path, MANIFEST))
    check = ["check", "-f", manifest, "--database-url", url(database)]

    assert await asyncio.to_thread(main, check) == 1  # nothing migrated yet
    assert "NotMigrated" in capsys.readouterr().err
    migrate = ["migrate", "-f", manifest, "--database-url", url(database), "--backup-dir", str(tmp_path / "b")]
    assert await asyncio.to_thread(main, migrate) == 0
    capsys.readouterr()

    assert await asyncio.to_thread(main, check) == 0
    assert "still matches" in capsys.readouterr().out

    # What langchain-postgres' PGVector and LlamaIndex do at start-up, and an index build that failed
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    await conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'items_l2'::regclass")
    before = await snapshot(conn)

    assert await asyncio.to_thread(main, check) == 1
    said = capsys.readouterr().err
    assert "Drifted" in said and "extension vector is installed again" in said
    assert "index public.items_l2 is INVALID" in said
    assert await snapshot(conn) == before  # a check changes nothing


async def test_migrate_prints_its_status_as_json_and_status_reads_it_back_from_the_journal(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_rich_database(conn)
    manifest = str(write(tmp_path, MANIFEST))
    before = await asyncio.to_thread(main, ["status", "-f", manifest, "--database-url", url(database)])
    assert before == 1 and "nothing recorded" in capsys.readouterr().err

    code = await asyncio.to_thread(
        main, ["migrate", "-f", manifest, "--database-url", url(database), "--backup-dir", str(tmp_path / "b"),
               "-o", "json"],
    )  # fmt: skip

    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["phase"] == "Succeeded"
    code = await asyncio.to_thread(main, ["status", "-f", manifest, "--database-url", url(database), "-o", "yaml"])
    recorded = yaml.safe_load(capsys.readouterr().out)
    assert code == 0 and recorded["phase"] == "Succeeded" and recorded["planHash"] == printed["planHash"]


SUBCOMMANDS = ["plan", "migrate", "rollback", "status", "check", "report", "demo", "operator", "crd", "completion"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_explains_itself_with_examples_and_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "vector-migration" in text.split("examples:")[1] and "exit codes:" in text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_generated(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    assert "vector-migration" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "arguments", "said"),
    [
        (
            {"strategy": "Replicate"},
            ["--target-database-url", "postgresql://su@other/postgres"],
            "--target-database-url: the manifest has no spec.replicate.target",
        ),
        (
            {"replicate": {"target": {"secretRef": {"name": "other"}}}},
            ["--target-database-url", "postgresql://su@other/postgres"],
            "replicate.target requires strategy: Replicate",
        ),
        (
            {"strategy": "Replicate", "replicate": {"target": {"secretRef": {"name": "other"}}}},
            [],
            "spec.replicate.target: give the other server as --target-database-url",
        ),
        (
            {"strategy": "Replicate", "replicate": {"target": {"secretRef": {"name": "o"}}, "dropOld": True}},
            ["--target-database-url", "postgresql://su@other/postgres"],
            "replicate.dropOld applies on the same server",
        ),
    ],
    ids=["no-target", "not-replicate", "no-url", "drop-old"],
)
def test_another_server_is_asked_for_where_it_means_something(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict[str, object], arguments: list[str], said: str
) -> None:
    manifest = {**MANIFEST, "spec": {**MANIFEST["spec"], **spec}}

    code = main(["plan", "-f", str(write(tmp_path, manifest)), "--database-url", "postgresql://app@/db", *arguments])

    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "environment", "peering"),
    [
        (["-A"], {}, None),  # a person's laptop: no peering object to wait for, so standalone
        (["-A"], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "vector-migration-operator"),  # a pod: the chart's
        (["-A", "--peering", "mine"], {}, "mine"),
        (["-A", "--standalone"], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, None),
    ],
    ids=["outside-a-cluster", "in-a-pod", "named", "standalone"],
)
def test_the_operator_peers_only_where_a_peering_object_is_to_be_had(
    argv: list[str], environment: dict[str, str], peering: str | None
) -> None:
    args = build_parser().parse_args(["operator", *argv])

    assert peering_of(args, environment) == peering
