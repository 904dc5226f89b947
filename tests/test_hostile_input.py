"""Bad input from a careless or hostile user: one line naming what is wrong, exit code 2, nothing touched.

No database is needed to refuse any of these: each is refused before a connection is opened
(the URL points at a socket directory that does not exist, so reaching it would exit 1 instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.scenarios import create_rich_database
from tests.test_command_line import MANIFEST, url
from vector_migration.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from vector_migration.database.sql import ConnectionParams

NOWHERE = "postgresql://app@/db?host=/nonexistent-vmig-socket-dir"


def spec(**fields: Any) -> dict[str, Any]:
    return {**MANIFEST, "spec": {**MANIFEST["spec"], **fields}}  # type: ignore[dict-item]


def run(tmp_path: Path, content: bytes, url: str = NOWHERE) -> int:
    path = tmp_path / "migration.yaml"
    path.write_bytes(content)
    return main(["plan", "-f", str(path), "--database-url", url])


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    return error


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (spec(verify={"sampleQueries": "20"}), "spec.verify.sampleQueries"),
        (spec(dryRun="no"), "spec.dryRun"),
        (spec(lockTimeout="30d"), "spec.lockTimeout"),
        (spec(statementTimeout="100d"), "spec.statementTimeout"),
        (spec(reindex={"maintenanceWorkMem": "99999999TB"}), "spec.reindex.maintenanceWorkMem"),
        (spec(strategy="Parallel", parallel={"keepOldFor": "9999999999d"}), "spec.parallel.keepOldFor"),
        ({**MANIFEST, "metadata": {"name": "cli", "lables": {"a": "b"}}}, "metadata.lables: unknown field"),
        (spec(target={"extension": 'ruvector"x'}), "spec.target.extension"),
        (spec(target={"extension": "ruvector", "version": '1.0"; DROP'}), "spec.target.version"),
        (spec(reindex={"parameters": {"m": 10**12}}), "spec.reindex.parameters"),
    ],
)
def test_a_value_the_api_server_would_refuse_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: dict[str, Any], named: str
) -> None:
    assert run(tmp_path, yaml.safe_dump(document).encode()) == EXIT_USAGE
    assert named in one_line(capsys)


def test_non_utf8_bytes_are_named_by_their_offset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content = yaml.safe_dump(MANIFEST).encode()
    assert run(tmp_path, content[:10] + b"\xff\xfe" + content[10:]) == EXIT_USAGE
    assert "not UTF-8 at byte 10" in one_line(capsys)


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join(['*' + chr(97 + n)] * 9)}]" for n in range(8)]
    bomb = "\n".join(levels) + "\n" + yaml.safe_dump(spec(backup={"volume": {"emptyDir": {}}}))
    assert run(tmp_path, bomb.encode()) == EXIT_USAGE
    assert "aliases" in one_line(capsys)


def test_a_huge_manifest_is_not_read_in_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = [{"name": f"public.t{n}"} for n in range(60_000)]
    assert run(tmp_path, yaml.safe_dump(spec(tables=tables)).encode()) == EXIT_USAGE
    assert "larger than 1024 KiB" in one_line(capsys)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@[::1/db",  # an unclosed IPv6 bracket
        "postgresql://app@localhost:99999999999/db",
        "postgresql://app@localhost/db?sslmode=verify-ful",
        "postgresql://app@/d%00b?host=/nonexistent",
        "mysql://app@localhost/db",
    ],
)
def test_a_database_url_that_cannot_be_used_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    assert run(tmp_path, yaml.safe_dump(MANIFEST).encode(), url) == EXIT_USAGE
    one_line(capsys)


async def test_names_that_look_like_markup_are_printed_as_text(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await conn.execute(
        'CREATE EXTENSION vector; CREATE TABLE public."emb[/red]x" (id int PRIMARY KEY, "[/]" vector(2));'
        'INSERT INTO public."emb[/red]x" SELECT g, ARRAY[g, g]::real[]::vector FROM generate_series(1, 20) g'
    )
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump(MANIFEST))

    code = await asyncio.to_thread(main, ["plan", "-f", str(path), "--database-url", url(database)])

    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    assert 'ALTER TABLE "public"."emb[/red]x" ALTER COLUMN "[/]"' in out.out.replace("\n", " ")

    missing = spec(tables=[{"name": "public.[/]"}])
    path.write_text(yaml.safe_dump(missing))
    assert await asyncio.to_thread(main, ["plan", "-f", str(path), "--database-url", url(database)]) != EXIT_OK
    assert "[/]" in one_line(capsys)


async def test_plan_against_a_locked_table_fails_in_about_lock_timeout_naming_the_holder(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_rich_database(conn)
    application = await asyncpg.connect(
        host=database.host,
        user=database.user,
        database=database.dbname,
        server_settings={"application_name": "shop-api"},
    )
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump(spec(lockTimeout="1s", statementTimeout="20s")))
    try:
        async with application.transaction():
            await application.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            plan = asyncio.to_thread(main, ["plan", "-f", str(path), "--database-url", url(database)])
            code = await asyncio.wait_for(plan, timeout=30)  # unbounded, it would wait as long as the lock
            elapsed = time.monotonic() - started
    finally:
        await application.close()

    assert code == EXIT_FAILED
    error = one_line(capsys)
    assert "lockTimeout (1s)" in error and "items held by shop-api" in error
    assert elapsed < 10


def _yaml_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30), st.binary(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=20,
    )


# Keys a manifest has, so generated documents reach the deeper validation, not only the top level.
_KEYS = st.sampled_from([
    "apiVersion", "kind", "metadata", "spec", "name", "target", "extension", "tables", "verify",
    "sampleQueries", "lockTimeout", "reindex", "parameters", "strategy", "backup",
])  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=300),
        _yaml_values().map(lambda value: yaml.safe_dump(value, allow_unicode=True).encode()),
        st.dictionaries(_KEYS, _yaml_values(), max_size=6).map(lambda d: yaml.safe_dump({**MANIFEST, **d}).encode()),
        st.dictionaries(_KEYS, _yaml_values(), max_size=6).map(
            lambda d: yaml.safe_dump({**MANIFEST, "spec": {**MANIFEST["spec"], **d}}).encode()  # type: ignore[dict-item]
        ),
    )
)
def test_any_bytes_through_plan_give_a_result_or_one_line_never_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        code = run(tmp_path, content)

    # 2: refused as bad input; 1: a valid manifest met the database URL, which leads nowhere here
    assert code in (EXIT_USAGE, EXIT_FAILED)
    text = errors.getvalue().strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
