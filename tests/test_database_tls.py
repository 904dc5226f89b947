"""TLS to the database, as a platform's PostgreSQL requires it: a real server with ssl=on and a private CA.

The command line takes libpq's own connection settings through the driver (sslrootcert, multi-host
lists, target_session_attrs, PG* variables) and refuses by name what the driver cannot honour; the
operator trusts a CA from a Secret (CloudNativePG's <cluster>-ca layout), for its own sessions and
for the backup Job's pg_dump alike.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import trustme

from tests.cluster import condition, phase, running_cluster, running_operator
from tests.scenarios import create_rich_database, snapshot
from tests.test_command_line import MANIFEST, write
from tests.test_operator import PASSWORD, migration
from vector_migration.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from vector_migration.demo import EmbeddedPostgres, create_database


@dataclass
class TlsServer:
    postgres: EmbeddedPostgres
    port: int
    ca: trustme.CA
    ca_file: Path
    terminator: TlsTerminator

    def url(self, dbname: str, host: str = "localhost", **query: str) -> str:
        settings = "&".join(f"{key}={value}" for key, value in query.items())
        return f"postgresql://postgres@{host}:{self.port}/{dbname}" + (f"?{settings}" if settings else "")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # the protocol's "may we speak TLS?"
GSS_REQUEST = struct.pack("!ii", 8, 80877104)


class TlsTerminator:
    """STAND-IN for a PostgreSQL server with ssl=on: the embedded build has no OpenSSL ("SSL is not
    supported by this build"), so this speaks the protocol's TLS opening (SSLRequest answered 'S',
    then the handshake with a certificate from a private CA) and relays the session to the real
    server's socket. Like a pg_hba.conf of hostssl lines only, it closes connections that do not
    ask for TLS.
    """

    def __init__(self, postgres: EmbeddedPostgres, context: ssl.SSLContext) -> None:
        self.socket_dir, self.port = str(postgres.params().host), postgres.params().port or 5432
        self.context = context
        self.sessions = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readexactly(8)
            if request == GSS_REQUEST:
                writer.write(b"N")
                request = await reader.readexactly(8)
            if request != SSL_REQUEST:
                return
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(self.context)
            self.sessions += 1
            server_reader, server_writer = await asyncio.open_unix_connection(f"{self.socket_dir}/.s.PGSQL.{self.port}")
            await asyncio.gather(_relay(reader, server_writer), _relay(server_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a client that gave up, or refused the certificate
        finally:
            writer.close()


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    finally:
        sink.close()


@pytest.fixture
async def tls_server(postgres: EmbeddedPostgres, tmp_path: Path) -> AsyncIterator[TlsServer]:
    """The test server behind TLS with a certificate for localhost and 127.0.0.1 from a private CA."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    terminator = TlsTerminator(postgres, context)
    server = await asyncio.start_server(terminator.serve, "127.0.0.1", 0)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        yield TlsServer(postgres, server.sockets[0].getsockname()[1], ca, ca_file, terminator)
    finally:
        server.close()


@pytest.fixture
async def tls_database(tls_server: TlsServer) -> str:
    name = f"tls_{os.getpid()}_{_free_port()}"
    await create_database(tls_server.postgres.params(), name)
    params = tls_server.postgres.params(name)
    connection = await asyncpg.connect(host=params.host, user=params.user, database=name)
    try:
        await create_rich_database(connection)
    finally:
        await connection.close()
    return name


async def plan(url: str, tmp_path: Path) -> int:
    return await asyncio.to_thread(main, ["plan", "-f", str(write(tmp_path, MANIFEST)), "--database-url", url])


async def test_verify_full_with_the_servers_ca_connects_over_tls(
    tls_server: TlsServer, tls_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = tls_server.url(tls_database, sslmode="verify-full", sslrootcert=str(tls_server.ca_file))

    assert await plan(url, tmp_path) == EXIT_OK, capsys.readouterr().err

    assert tls_server.terminator.sessions > 0
    # and the server speaks nothing but TLS: a session without it gets nowhere
    assert await plan(tls_server.url(tls_database, sslmode="disable"), tmp_path) == EXIT_FAILED


async def test_a_certificate_from_another_ca_is_refused_in_one_line(
    tls_server: TlsServer, tls_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))

    code = await plan(tls_server.url(tls_database, sslmode="verify-full", sslrootcert=str(stranger)), tmp_path)

    assert code == EXIT_FAILED
    error = capsys.readouterr().err
    assert "certificate verify failed" in error and "Traceback" not in error


async def test_a_host_name_the_certificate_does_not_name_fails_verify_full_but_passes_verify_ca(
    tls_server: TlsServer, tls_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_name = socket.gethostname()  # resolves here, and the certificate names only localhost/127.0.0.1
    if socket.gethostbyname(other_name) != "127.0.0.1":
        pytest.skip(f"{other_name} does not resolve to 127.0.0.1 here")
    ca = str(tls_server.ca_file)

    assert await plan(tls_server.url(tls_database, host=other_name, sslmode="verify-full", sslrootcert=ca),
                      tmp_path) == EXIT_FAILED  # fmt: skip
    assert await plan(tls_server.url(tls_database, host=other_name, sslmode="verify-ca", sslrootcert=ca),
                      tmp_path) == EXIT_OK  # fmt: skip


async def test_libpq_settings_reach_the_driver_multi_host_and_environment(
    tls_server: TlsServer,
    tls_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first host refuses connections; libpq's rule is to try the next one.
    url = (f"postgresql://postgres@127.0.0.1:{_free_port()},localhost:{tls_server.port}/{tls_database}"
           "?target_session_attrs=read-write&sslmode=verify-full")  # fmt: skip
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_server.ca_file))  # from the environment, as libpq reads it

    assert await plan(url, tmp_path) == EXIT_OK, capsys.readouterr().err


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("connect_timeout=5", "connect_timeout"),
        ("options=-cstatement_timeout%3D0", "options"),
        ("sslmode=verify-ful", "sslmode"),
        ("target_session_attrs=primay", "target_session_attrs"),
    ],
)
async def test_a_setting_the_driver_cannot_honour_is_refused_by_name(
    tls_server: TlsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], query: str, named: str
) -> None:
    code = await plan(f"postgresql://postgres@localhost:{tls_server.port}/postgres?{query}", tmp_path)

    assert code == EXIT_USAGE
    error = capsys.readouterr().err.strip()
    assert named in error and len(error.splitlines()) == 1 and "Traceback" not in error


async def test_the_operator_trusts_the_ca_secret_for_its_sessions(
    tls_server: TlsServer, tls_database: str, tmp_path: Path
) -> None:
    # The backup is off here: the embedded build's pg_dump has no TLS either ("SSL support is not
    # compiled in"). The Job's CA mount is checked in test_builders; the kind suite runs it for real.
    params = tls_server.postgres.params(tls_database)
    inspect = await asyncpg.connect(host=params.host, user=params.user, database=tls_database)
    before = await snapshot(inspect)
    async with running_cluster(tmp_path, tls_server.postgres.bin_dir) as (cluster, runner):
        await cluster.apply_secret(
            "shop-app",
            {"host": "localhost", "port": str(tls_server.port), "dbname": tls_database, "username": "postgres",
             "password": PASSWORD},
        )  # fmt: skip
        await cluster.apply_secret("shop-db-ca", {"ca.crt": tls_server.ca.cert_pem.bytes().decode()})
        async with running_operator(cluster):
            resource = migration(backup={"enabled": False})
            resource["spec"]["database"] = {
                "secretRef": {"name": "shop-app"},
                "sslMode": "verify-full",
                "caSecretRef": {"name": "shop-db-ca"},
            }
            await cluster.apply(resource)

            done = await cluster.wait_for("shop", lambda r: phase(r) in ("Succeeded", "Failed", "RolledBack"))

        assert phase(done) == "Succeeded", done["status"]["message"]
        assert condition(done, "Ready")["status"] == "True"
        assert tls_server.terminator.sessions > 0  # every session went through TLS: nothing else is served
        assert runner.started == []
    try:
        assert (await snapshot(inspect)).rows == before.rows
    finally:
        await inspect.close()
