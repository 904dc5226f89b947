"""The objects the operator creates, tested as data."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from vector_migration.api import VectorMigration, parse_manifest
from vector_migration.kube.builders import (
    BACKUP_SCRIPT,
    REPORT_BYTES_LIMIT,
    build_backup_job,
    build_cutover_configmap,
    build_plan_configmap,
    build_report_configmap,
    build_restore_job,
    is_dns_label,
    object_name,
)


def resource(**spec: object) -> VectorMigration:
    return parse_manifest(
        {
            "apiVersion": "ruvector.dev/v1alpha1",
            "kind": "VectorMigration",
            "metadata": {"name": "shop", "namespace": "apps", "uid": "1234-abcd", "generation": 3},
            "spec": spec,
        }
    )


def backup_job(**spec: object) -> dict:
    return build_backup_job(
        resource(**spec),
        secret_name="shop-app",
        connection={"PGHOST": "shop-rw", "PGPORT": "5432", "PGDATABASE": "app", "PGUSER": "app"},
        archive_name="app-shop-abcd.dump",
        tables=[("public", "items"), ("Odd Schema", 'Mixed "Quoted"')],
        server_major=17,
        plan_hash="sha256:0123456789abcdef",
    )


def test_the_backup_job_runs_restricted_and_once() -> None:
    job = backup_job()
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert job["metadata"]["name"] == "shop-backup-01234567"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"
    assert job["metadata"]["labels"]["ruvector.dev/migration"] == "shop"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] > 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"] == "postgres:17"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["backup"] == {"name": "backup", "persistentVolumeClaim": {"claimName": "shop-backup"}}
    assert "emptyDir" in volumes["scratch"]
    assert volumes["database-password"]["secret"]["items"] == [{"key": "password", "path": "password"}]


def test_a_database_ca_is_mounted_for_libpq_and_the_restore_gets_it_too() -> None:
    for job in (
        build_backup_job(
            resource(), ca=("shop-db-ca", "ca.crt"), secret_name="shop-app", connection={"PGSSLMODE": "verify-full"},
            archive_name="a.dump", tables=[], server_major=17, plan_hash="sha256:0123456789abcdef",
        ),
        build_restore_job(
            resource(), ca=("shop-db-ca", "ca.crt"), secret_name="shop-app", connection={"PGSSLMODE": "verify-full"},
            archive_name="a.dump", sha256="ab" * 32, server_major=17, keep_schema="vector_migration_keep",
        ),
    ):  # fmt: skip
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PGSSLROOTCERT"] == "/var/run/secrets/database-ca/ca.crt"
        assert {"name": "database-ca", "mountPath": "/var/run/secrets/database-ca", "readOnly": True} in container[
            "volumeMounts"
        ]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "database-ca"]
        assert volume["secret"]["secretName"] == "shop-db-ca"
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        kubernetes_validate.validate(job, "1.31.0", strict=True)
    assert "PGSSLROOTCERT" not in {e["name"] for e in backup_job()["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_password_is_neither_an_argument_nor_an_environment_variable() -> None:
    job = backup_job()
    container = job["spec"]["template"]["spec"]["containers"][0]

    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "PGPASSWORD" not in env
    assert not any("valueFrom" in e for e in container["env"])
    assert env["PGHOST"] == "shop-rw" and env["PGUSER"] == "app"
    assert all("password" not in argument.lower() or argument == BACKUP_SCRIPT for argument in container["command"])


def test_vector_tables_scope_passes_exact_quoted_patterns() -> None:
    job = backup_job(backup={"scope": "VectorTables", "volume": {"emptyDir": {}}, "image": "registry.local/pg:17.2"})
    container = job["spec"]["template"]["spec"]["containers"][0]

    assert container["command"][4:] == ['--table="public"."items"', '--table="Odd Schema"."Mixed ""Quoted"""']
    assert container["image"] == "registry.local/pg:17.2"
    assert {"name": "backup", "emptyDir": {}} in job["spec"]["template"]["spec"]["volumes"]


def test_child_names_are_dns_labels_even_for_long_resource_names() -> None:
    long_name = "a" * 60
    for suffix in ("plan", "backup", "backup-01234567"):
        name = object_name(long_name, suffix)
        assert is_dns_label(name), name
        assert name.endswith(suffix)
    assert object_name(long_name, "plan") != object_name("a" * 59 + "b", "plan")


def test_the_plan_configmap_holds_the_plan_and_its_hash() -> None:
    plan = {
        "planHash": "sha256:feedbeef",
        "swapTransaction": [{"step": "lock", "sql": 'LOCK TABLE "public"."items" IN ACCESS EXCLUSIVE MODE'}],
        "afterCommit": [],
    }

    configmap = build_plan_configmap(resource(), plan)

    assert configmap["metadata"]["name"] == "shop-plan"
    assert configmap["data"]["planHash"] == "sha256:feedbeef"
    assert json.loads(configmap["data"]["plan.json"]) == plan
    assert configmap["data"]["statements.sql"] == (
        '-- In one transaction\n-- lock\nLOCK TABLE "public"."items" IN ACCESS EXCLUSIVE MODE;\n'
    )


def test_the_cutover_configmap_routes_reads_to_the_shadows_until_the_finalize() -> None:
    from vector_migration.api import CutoverStatus, ParallelStatus, ShadowTableStatus, VectorMigrationStatus
    from vector_migration.vocabulary import Phase

    status = VectorMigrationStatus(
        phase=Phase.CUTOVER,
        cutover=CutoverStatus(step=1, weight=25),
        parallel=ParallelStatus(tables=[ShadowTableStatus(name="public.docs", shadow="public.docs_vmig_shadow")]),
    )

    during = build_cutover_configmap(resource(strategy="Parallel"), status)
    status.phase = Phase.SUCCEEDED
    after = build_cutover_configmap(resource(strategy="Parallel"), status)

    assert during["metadata"]["name"] == "shop-cutover"
    assert during["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"
    assert (during["data"]["weight"], during["data"]["step"]) == ("25", "1")
    assert json.loads(during["data"]["tables.json"]) == {"public.docs": "public.docs_vmig_shadow"}
    assert after["data"]["weight"] == "100"
    assert json.loads(after["data"]["tables.json"]) == {"public.docs": "public.docs"}


def test_the_report_configmap_holds_the_page_shortened_to_fit_or_says_how_to_make_it() -> None:
    from vector_migration.api import VectorMigrationStatus
    from vector_migration.vocabulary import Phase

    status = VectorMigrationStatus(phase=Phase.SUCCEEDED, message="1100 rows equal", timings={"swapSeconds": 1.5})
    whole = build_report_configmap(resource(), status)
    status.warnings = [f"warning {n}: " + "x" * 1000 for n in range(1000)]  # a page of about 1 MB
    shortened = build_report_configmap(resource(), status)
    status.message = "x" * 1_000_000  # nothing to leave out makes this fit
    pointer = build_report_configmap(resource(), status)

    assert whole["metadata"]["name"] == "shop-report" and whole["data"]["phase"] == "Succeeded"
    assert whole["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"
    assert "1100 rows equal" in whole["data"]["report.html"] and "<svg" in whole["data"]["report.html"]
    assert "not shown here" not in whole["data"]["report.html"]
    page = shortened["data"]["report.html"]
    assert len(page.encode()) <= REPORT_BYTES_LIMIT
    assert "1100 rows equal" in page and "<svg" in page and "warning 199: " in page and "warning 200: " not in page
    assert "800 more rows not shown here: <code>kubectl vmig report shop -n " in page
    assert len(pointer["data"]["report.html"]) < 1000
    assert "kubectl vmig report shop -n " in pointer["data"]["report.html"]


def test_a_report_of_thousands_of_indexes_fits_its_configmap_with_the_first_ones_charted() -> None:
    from vector_migration.api import IndexVerification, LatencyMs, VectorMigrationStatus, Verification
    from vector_migration.vocabulary import Phase

    latency = LatencyMs(p50=1.0, p95=2.0, p99=3.0)
    measured = {"queries": 200, "recall_before": 0.97, "recall_after": 0.96, "latency_before": latency,
                "latency_after": latency}  # fmt: skip
    indexes = [IndexVerification(name=f"index_{n:04}", **measured) for n in range(3000)]
    status = VectorMigrationStatus(phase=Phase.SUCCEEDED, message="3000 indexes valid",
                                   verification=Verification(indexes=indexes))  # fmt: skip

    page = build_report_configmap(resource(), status)["data"]["report.html"]

    assert len(page.encode()) <= REPORT_BYTES_LIMIT
    assert page.count('<figure class="chart"') == 2  # recall and latency, of the indexes shown
    assert "index_0199" in page and "index_0200" not in page
    assert "2,800 more rows not shown here" in page


@pytest.mark.parametrize("password", ["plain", "with:colon", "back\\slash", "sp ace$and'quote"])
def test_the_backup_script_writes_a_password_file_libpq_reads_back(tmp_path: Path, password: str) -> None:
    """Run the script's first lines with a stand-in pg_dump that prints the password file it was given."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "password").write_text(password)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").write_text('#!/bin/sh\ncat "$PGPASSFILE" >&2\nexit 9\n')
    (bin_dir / "pg_dump").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PASSWORD_DIR": str(secrets),
        "SCRATCH_DIR": str(tmp_path),
        "BACKUP_DIR": str(tmp_path),
        "ARCHIVE": "x.dump",
        "EXPECTED_TABLES": "",
        "TERMINATION_LOG": str(tmp_path / "termination"),
    }

    result = subprocess.run(["/bin/sh", "-c", BACKUP_SCRIPT, "backup"], env=env, capture_output=True, text=True)

    assert result.returncode == 9
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    assert result.stderr == f"*:*:*:*:{escaped}\n"
    assert oct((tmp_path / "pgpass").stat().st_mode & 0o777) == "0o600"


def job_connection(database) -> dict[str, str]:
    """The embedded server's connection as a Job's PG* variables (it trusts local sockets)."""
    return {"PGHOST": database.host, "PGDATABASE": database.dbname, "PGUSER": "postgres"}


def real_backup_job(database, tables: list[tuple[str, str]], **spec: object) -> dict:
    """A backup Job aimed at the test database, writing test.dump."""
    return build_backup_job(
        resource(**spec),
        secret_name="db",
        connection=job_connection(database),
        archive_name="test.dump",
        tables=tables,
        server_major=18,
        plan_hash="sha256:00000000",
    )


async def run_backup_container(job: dict, secret: dict[str, str], root: Path, pg_bin: Path) -> tuple[int, str]:
    """A stand-in for the kubelet: run the Job's container command here, with its volumes as directories."""
    import asyncio

    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {"PASSWORD_DIR": root / "secret", "BACKUP_DIR": root / "backup", "SCRATCH_DIR": root / "scratch"}
    for key, directory in mounts.items():
        directory.mkdir(parents=True, exist_ok=True)
        env[key] = str(directory)
    (mounts["PASSWORD_DIR"] / "password").write_text(secret["password"])
    env["TERMINATION_LOG"] = str(root / "termination-log")
    env["PATH"] = f"{pg_bin}:{os.environ['PATH']}"
    process = await asyncio.create_subprocess_exec(
        *container["command"], env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    return process.returncode or 0, stderr.decode()


async def test_the_backup_job_dumps_a_real_database_and_reports_its_fingerprint(
    postgres, database, conn, tmp_path: Path
) -> None:
    from tests.scenarios import create_rich_database

    await create_rich_database(conn)
    job = real_backup_job(database, [("public", "items"), ("Odd Schema", 'Mixed "Quoted" Table')])

    # The embedded server trusts local sockets, so the password file is written but not checked here.
    code, stderr = await run_backup_container(job, {"password": "job-secret"}, tmp_path, postgres.bin_dir)

    assert code == 0, stderr
    report = json.loads((tmp_path / "termination-log").read_text())
    archive = tmp_path / "backup" / "test.dump"
    assert report["sizeBytes"] == archive.stat().st_size
    import hashlib

    assert report["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert not (tmp_path / "backup" / "test.dump.partial").exists()


async def test_the_backup_job_fails_when_a_vector_table_is_missing_from_the_archive(
    postgres, database, conn, tmp_path: Path
) -> None:
    from tests.scenarios import create_rich_database

    await create_rich_database(conn)
    job = real_backup_job(database, [("public", "items")], backup={"scope": "VectorTables"})
    # Expect a table the dump was not asked for: the table-of-contents check must catch it.
    container = job["spec"]["template"]["spec"]["containers"][0]
    for variable in container["env"]:
        if variable["name"] == "EXPECTED_TABLES":
            variable["value"] += "public empty_vectors\n"

    code, stderr = await run_backup_container(job, {"password": "unused"}, tmp_path, postgres.bin_dir)

    assert code == 3
    assert "archive has no TABLE DATA for public empty_vectors" in stderr
    assert not (tmp_path / "termination-log").exists()


def restore_job(sha256: str = "ab" * 32, **spec: object) -> dict:
    return build_restore_job(
        resource(**spec),
        secret_name="shop-app",
        connection={"PGHOST": "shop-rw", "PGDATABASE": "app", "PGUSER": "app"},
        archive_name="app-shop-abcd.dump",
        sha256=sha256,
        server_major=17,
        keep_schema="vector_migration",
    )


def test_the_restore_job_restores_once_in_one_transaction_reading_the_archive_only() -> None:
    job = restore_job()
    container = job["spec"]["template"]["spec"]["containers"][0]

    assert job["metadata"]["name"] == "shop-restore-abababab"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "restore"
    assert job["spec"]["backoffLimit"] == 0  # a failed restore is not fixed by running it again unchanged
    assert container["command"][3:] == [
        "restore", "--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-password",
        "--exclude-schema=vector_migration",
    ]  # fmt: skip
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["backup"]["readOnly"] is True and mounts["database-password"]["readOnly"] is True
    assert {"name": "EXPECTED_SHA256", "value": "ab" * 32} in container["env"]
    assert "PGPASSWORD" not in {e["name"] for e in container["env"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


async def test_the_restore_job_brings_back_the_archived_rows_and_refuses_a_changed_archive(
    postgres, database, conn, tmp_path: Path
) -> None:
    import hashlib

    from tests.scenarios import create_rich_database

    await create_rich_database(conn)
    rows = await conn.fetchval("SELECT count(*) FROM items")
    backup = real_backup_job(database, [("public", "items")])
    assert (await run_backup_container(backup, {"password": "unused"}, tmp_path, postgres.bin_dir))[0] == 0
    archive = tmp_path / "backup" / "test.dump"
    await conn.execute("DELETE FROM items WHERE id % 2 = 0")  # something to undo

    def restore(sha256: str) -> dict:
        return build_restore_job(
            resource(),
            secret_name="db",
            connection=job_connection(database),
            archive_name="test.dump",
            sha256=sha256,
            server_major=18,
            keep_schema="vector_migration",
        )

    (tmp_path / "termination-log").unlink()
    code, stderr = await run_backup_container(restore("00" * 32), {"password": "unused"}, tmp_path, postgres.bin_dir)
    assert code == 3 and "changed since it was verified" in stderr
    assert await conn.fetchval("SELECT count(*) FROM items") < rows  # nothing restored

    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    code, stderr = await run_backup_container(restore(digest), {"password": "unused"}, tmp_path, postgres.bin_dir)
    assert code == 0, stderr
    assert await conn.fetchval("SELECT count(*) FROM items") == rows
    assert json.loads((tmp_path / "termination-log").read_text())["sha256"] == digest


def test_the_target_secret_keeps_the_login_and_changes_only_where_the_database_is() -> None:
    from vector_migration.kube.replica_target import moved_credentials

    source = {
        "host": "shop-rw.default", "port": "5432", "dbname": "app", "username": "app", "user": "app",
        "password": "p:w\\d", "ca.crt": "-----BEGIN CERTIFICATE-----",
        "uri": "postgresql://app:p%3Aw%5Cd@shop-rw.default:5432/app?sslmode=verify-full",
        "jdbc-uri": "jdbc:postgresql://shop-rw.default:5432/app?password=p%3Aw%5Cd&user=app",
        "pgpass": "shop-rw.default:5432:app:app:p\\:w\\\\d\n",
    }  # fmt: skip

    moved = moved_credentials(source, "shop-v2-rw.db", 5433, "app")

    assert (moved["host"], moved["port"], moved["dbname"]) == ("shop-v2-rw.db", "5433", "app")
    assert (moved["username"], moved["password"]) == ("app", "p:w\\d")
    assert moved["uri"] == "postgresql://app:p%3Aw%5Cd@shop-v2-rw.db:5433/app?sslmode=verify-full"
    assert moved["jdbc-uri"] == "jdbc:postgresql://shop-v2-rw.db:5433/app?password=p%3Aw%5Cd&user=app"
    assert moved["pgpass"] == "shop-v2-rw.db:5433:app:app:p\\:w\\\\d\n"
    assert "ca.crt" not in moved  # the other server's CA is its own
