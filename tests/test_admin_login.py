"""The split CloudNativePG users have: the application's role, and an admin login for extensions only.

The application's role (CNPG's `<cluster>-app`) owns the tables and cannot create the target
extension, which is not trusted; an admin login (`<cluster>-superuser`) can. With
`--admin-database-url` (the operator's `spec.database.adminSecretRef`), the session logs in as
the admin and acts as the application's role, taking the admin's privileges back only for
CREATE/DROP EXTENSION. The application's role here is also hostile: its CHECK constraint and its
materialized view call a function that escapes SET ROLE with RESET ROLE and makes it superuser.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.cluster import phase, running_cluster, running_operator
from tests.scenarios import snapshot
from tests.test_command_line import MANIFEST, write
from tests.test_operator import PASSWORD, migration, secret_for
from tests.test_privileges import ATTACKER, arrange_as_the_owner, is_superuser
from vector_migration.cli import EXIT_OK, main
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres


def login_url(params: ConnectionParams, user: str) -> str:
    return f"postgresql://{user}@/{params.dbname}?host={params.host}"


async def migrate_as_the_application(
    database: ConnectionParams, tmp_path: Path, spec: dict[str, Any], *, admin: str | None, command: str = "migrate"
) -> int:
    manifest = {**MANIFEST, "spec": {**MANIFEST["spec"], **spec}}  # type: ignore[dict-item]
    arguments = [command, "-f", str(write(tmp_path, manifest)), "--database-url", login_url(database, ATTACKER)]
    if command == "migrate":
        arguments += ["--backup-dir", str(tmp_path / "backups"), "--scratch-dir", str(tmp_path / "scratch")]
    if admin:
        arguments += ["--admin-database-url", login_url(database, admin)]
    return await asyncio.to_thread(main, arguments)


async def arrange_the_application(conn: asyncpg.Connection, database: ConnectionParams) -> None:
    await arrange_as_the_owner(conn, database)
    # What CNPG's app role has: its database (for the journal's schema); pgvector came from the admin.
    await conn.execute(f"GRANT CREATE ON DATABASE {database.dbname} TO {ATTACKER}")


async def test_the_application_role_alone_cannot_create_the_target_and_nothing_changes(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await arrange_the_application(conn, database)
    before = await snapshot(conn)

    code = await migrate_as_the_application(database, tmp_path, {}, admin=None)

    assert code == 1
    said = capsys.readouterr().err
    assert "creating extension ruvector_standin needs a superuser" in said and "--admin-database-url" in said
    assert await snapshot(conn) == before
    await conn.execute(f"DROP OWNED BY {ATTACKER} CASCADE")


@pytest.mark.parametrize("how", [{}, {"strategy": "Rebuild"}], ids=["InPlace", "Rebuild"])
async def test_an_admin_login_creates_the_extension_and_the_application_role_does_the_rest(
    database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path, how: dict[str, Any]
) -> None:
    await arrange_the_application(conn, database)
    admin = await conn.fetchval("SELECT current_user")
    before = await snapshot(conn)

    assert await migrate_as_the_application(database, tmp_path, how, admin=admin, command="plan") == EXIT_OK
    code = await migrate_as_the_application(database, tmp_path, how, admin=admin)

    assert code == EXIT_OK
    assert not await is_superuser(conn)  # RESET ROLE in its code led nowhere
    assert (await snapshot(conn)).rows == before.rows
    owners = dict(
        await conn.fetch(
            """
            SELECT 'extension', pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'ruvector_standin'
            UNION ALL SELECT 'journal', pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'vector_migration'
            UNION ALL SELECT relname::text, pg_get_userbyid(relowner) FROM pg_class
             WHERE oid IN ('public.documents'::regclass, 'public.document_vectors'::regclass,
                           'public.documents_embedding'::regclass)
            """
        )
    )
    assert owners == {
        "extension": admin,  # the one thing made with the admin's privileges
        "journal": ATTACKER,
        "documents": ATTACKER,
        "document_vectors": ATTACKER,
        "documents_embedding": ATTACKER,
    }
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 0
    await conn.execute(f"DROP OWNED BY {ATTACKER} CASCADE")
    await conn.execute("DROP SCHEMA IF EXISTS vector_migration CASCADE")


async def test_the_operator_reads_the_admin_login_from_cloudnativepg_superuser_secret(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await arrange_the_application(conn, database)
    admin = await conn.fetchval("SELECT current_user")
    before = await snapshot(conn)
    async with running_cluster(tmp_path, postgres.bin_dir) as (cluster, _), running_operator(cluster):
        # CloudNativePG's layouts: <cluster>-app names the database, <cluster>-superuser does not ("*")
        await cluster.apply_secret("shop-app", {**secret_for(database), "username": ATTACKER})
        await cluster.apply_secret("shop-superuser", {"username": admin, "password": "S-" + PASSWORD, "dbname": "*"})
        await cluster.apply(
            migration(database={"secretRef": {"name": "shop-app"}, "adminSecretRef": {"name": "shop-superuser"}})
        )

        done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"))

        assert phase(done) == "Succeeded", done["status"]["message"]
        assert "S-" + PASSWORD not in cluster.traffic()
    assert not await is_superuser(conn)
    assert (await snapshot(conn)).rows == before.rows
    assert (
        await conn.fetchval("SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'ruvector_standin'")
        == admin
    )
    await conn.execute(f"DROP OWNED BY {ATTACKER} CASCADE")
    await conn.execute("DROP SCHEMA IF EXISTS vector_migration CASCADE")
