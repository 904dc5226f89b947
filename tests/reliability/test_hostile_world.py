"""A hostile world: a table owner who plants code for a superuser to run, and input built to break the tool.

Each scenario counts what the promises are about: rows lost, bad input the tool took, privileges
a role gained.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.reliability.report import declare, observe, rows_lost
from tests.scenarios import snapshot
from tests.test_command_line import MANIFEST, url, write
from tests.test_privileges import ATTACKER, arrange_as_the_owner, arrange_partial_index, is_superuser, migrate
from vector_migration.cli import EXIT_OK, EXIT_USAGE, main
from vector_migration.database.sql import ConnectionParams

ESCALATION = {
    "owner-code-inplace": ({}, "an InPlace migration (Atomic) run by a superuser"),
    "owner-code-rebuild": ({"strategy": "Rebuild"}, "a Rebuild migration run by a superuser"),
    # keepOldFor 0s: the materialized view moves (its query runs) in the same run
    "owner-code-parallel": (
        {"strategy": "Parallel", "parallel": {"keepOldFor": "0s"}},
        "a Parallel migration run by a superuser",
    ),
}
for _id, (_, _how) in ESCALATION.items():
    declare(
        _id,
        f"an ordinary table owner plants a function that grants it SUPERUSER in a CHECK constraint "
        f"(and a materialized view), escaping SET ROLE with RESET ROLE; {_how}",
        "the owner's code runs as the owner (SECURITY DEFINER wrapper); the owner stays ordinary; Succeeded",
    )
declare(
    "owner-code-plan",
    "the same owner's partial index calls the function through an IMMUTABLE wrapper; `plan` by a superuser",
    "the predicate is not evaluated with the superuser's privileges; the index is reported as not measured",
)
declare(
    "bad-input",
    "manifests and URLs built to break the tool: coercible strings, out-of-range durations and sizes, an "
    "alias bomb, non-UTF-8 bytes, unknown metadata, quotes in extension names, an unusable port",
    "every one refused with exit code 2 and one line naming it, before any connection",
)


@pytest.mark.parametrize("scenario_id", sorted(ESCALATION))
async def test_a_table_owners_code_never_runs_with_the_migrations_privileges(
    scenario_id: str, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    how = ESCALATION[scenario_id][0]
    await arrange_as_the_owner(conn, database)
    before = await snapshot(conn)

    code = await migrate(database, tmp_path, how)

    gained = int(await is_superuser(conn))
    after = await snapshot(conn)
    lost = rows_lost({"public.documents": before.rows["public.documents"]}, after.rows)
    await conn.execute(f"DROP OWNED BY {ATTACKER} CASCADE")
    assert code == EXIT_OK
    assert (gained, lost) == (0, 0)
    observe(scenario_id, "the owner is still an ordinary role; Succeeded", lost, privilege_gained=gained)


async def test_plan_does_not_run_a_predicates_code_with_its_privileges(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await arrange_as_the_owner(conn, database)
    await arrange_partial_index(database)

    code = await asyncio.to_thread(
        main, ["plan", "-f", str(write(tmp_path, MANIFEST)), "--database-url", url(database)]
    )

    gained = int(await is_superuser(conn))
    await conn.execute(f"DROP OWNED BY {ATTACKER} CASCADE")
    printed = capsys.readouterr()
    assert code == EXIT_OK and gained == 0
    assert "index documents_recent is not measured: its predicate calls public.looks_harmless(boolean)" in (
        (printed.out + printed.err).replace("\n", "")
    )
    observe("owner-code-plan", "the partial index reported as not measured; the owner is ordinary", 0,
            privilege_gained=gained)  # fmt: skip


def _spec(**fields: Any) -> bytes:
    return yaml.safe_dump({**MANIFEST, "spec": {**MANIFEST["spec"], **fields}}).encode()  # type: ignore[dict-item]


BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join(['*' + chr(97 + n)] * 9)}]" for n in range(8)
]).encode()  # fmt: skip
NOWHERE = "postgresql://app@/db?host=/nonexistent-vmig-socket-dir"
BAD_INPUT: list[tuple[bytes, str]] = [
    (_spec(verify={"sampleQueries": "20"}), NOWHERE),
    (_spec(dryRun="no"), NOWHERE),
    (_spec(lockTimeout="30d"), NOWHERE),
    (_spec(statementTimeout="100d"), NOWHERE),
    (_spec(reindex={"maintenanceWorkMem": "99999999TB"}), NOWHERE),
    (_spec(strategy="Parallel", parallel={"keepOldFor": "9999999999d"}), NOWHERE),
    (_spec(target={"extension": 'ruvector"x'}), NOWHERE),
    (_spec(reindex={"parameters": {"m": 10**12}}), NOWHERE),
    (yaml.safe_dump({**MANIFEST, "metadata": {"name": "x", "lables": {}}}).encode(), NOWHERE),
    (BOMB + b"\n" + _spec(), NOWHERE),
    (b"\xff\xfe" + _spec(), NOWHERE),
    (_spec(), "postgresql://app@localhost:99999999999/db"),
    (_spec(), "postgresql://app@localhost/db?sslmode=verify-ful"),
    (_spec(), "postgresql://app@localhost/db?connect_timeout=5"),
]


def test_input_built_to_break_the_tool_is_refused(tmp_path: Path) -> None:
    accepted = 0
    for number, (content, database_url) in enumerate(BAD_INPUT):
        path = tmp_path / f"manifest-{number}.yaml"
        path.write_bytes(content)
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            code = main(["plan", "-f", str(path), "--database-url", database_url])
        one_line = len(errors.getvalue().strip().splitlines()) == 1 and "Traceback" not in errors.getvalue()
        accepted += int(code != EXIT_USAGE or not one_line)
    assert accepted == 0
    observe("bad-input", f"{len(BAD_INPUT)} inputs, each refused with exit 2 in one line", 0,
            bad_input_accepted=accepted)  # fmt: skip
