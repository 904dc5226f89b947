"""Quoting, sessions and connection parameters: the only place SQL text meets names.

Every identifier the engine writes into SQL goes through :func:`quote_ident` (or
:func:`qualify`, built on it); every value travels as a bind parameter. DDL cannot take bind
parameters, so the few literals DDL needs (storage parameters, setting values) go through
:func:`quote_literal`, which is only ever applied to values read back from the catalog or
validated by the API models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import ssl as ssl_module
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
from asyncpg import connect_utils

# Pinned on every session: a function or operator planted in a user-writable schema cannot
# shadow a catalog one (the CVE-2018-1058 class). Every object is schema-qualified instead.
PINNED_SEARCH_PATH = "pg_catalog, pg_temp"
APPLICATION_NAME = "vector-migration"


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident does, always."""
    if not name:
        raise ValueError("empty identifier")
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def qualify(schema: str, name: str) -> str:
    """A schema-qualified, quoted name."""
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def quote_literal(value: str) -> str:
    """A standard-conforming string literal (for DDL, which takes no bind parameters)."""
    if "\x00" in value:
        raise ValueError("literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def conninfo_value(text: str) -> str:
    """One value of a libpq connection string, quoted as libpq reads it (in single quotes, backslash-escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def operator_ref(schema: str, operator: str) -> str:
    """A schema-qualified operator; operator names are symbols, checked rather than quoted."""
    if not operator or any(char not in "+-*/<>=~!@#%^&|`?" for char in operator):
        raise ValueError(f"not an operator name: {operator!r}")
    return f"OPERATOR({quote_ident(schema)}.{operator})"


# libpq connection settings asyncpg does not implement. In a URL, asyncpg would send them to the
# server as run-time settings, which fails later and less clearly; they are refused by name.
LIBPQ_SETTINGS_NOT_HONOURED = frozenset({
    "options", "connect_timeout", "client_encoding", "fallback_application_name", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "hostaddr",
    "sslcompression", "sslcrldir", "sslsni", "sslcertmode", "requirepeer", "gssencmode", "channel_binding",
    "require_auth", "gssdelegation", "replication", "load_balance_hosts", "sslkeylogfile",
    "min_protocol_version", "max_protocol_version",
})  # fmt: skip
_VERIFYING_MODES = ("require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class ConnectionParams:
    """libpq connection parameters as the driver resolved them; the password is never part of repr() or str()."""

    host: str | None = None  # the first host: a name, an address or a socket directory
    port: int | None = None
    dbname: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None
    # Every (host, port) the connection may try, in order (libpq's multi-host lists); empty: host and port.
    hosts: tuple[tuple[str, int | None], ...] = ()
    target_session_attrs: str | None = None
    sslrootcert: str | None = None  # a CA file, for this process's children (pg_dump, pg_restore) too
    # The TLS settings the driver built (CA, client certificate), or one built from a Secret's CA.
    ssl_context: ssl_module.SSLContext | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """A secret-free description for messages and logs."""
        addresses = self.hosts or ((self.host or "localhost", self.port),)
        where = ",".join(f"{host}:{port}" if port else host for host, port in addresses)
        return f"{self.user or '(default user)'}@{where}/{self.dbname or '(default database)'}"

    def with_database(self, dbname: str) -> ConnectionParams:
        """The same server, another database."""
        return dataclasses.replace(self, dbname=dbname)

    def with_login(self, user: str, password: str | None) -> ConnectionParams:
        """The same server, database and TLS settings, another login.

        An admin's: CNPG's superuser Secret names no database, and a second URL's host is not
        trusted to be the same server.
        """
        return dataclasses.replace(self, user=user, password=password)

    def ssl_argument(self) -> ssl_module.SSLContext | str | None:
        """What asyncpg's ``ssl`` takes: the context when the mode verifies or requires TLS, else the mode."""
        if self.ssl_context is not None and self.sslmode in _VERIFYING_MODES:
            return self.ssl_context
        return self.sslmode

    def libpq_environment(self, passfile: Path | None) -> dict[str, str]:
        """Environment for pg_dump/pg_restore: parameters as PG* variables, the password only in a file."""
        addresses = self.hosts or ((self.host or "", self.port),)
        hosts = ",".join(host for host, _ in addresses)
        ports = ",".join(str(port or "") for _, port in addresses).strip(",")
        env: dict[str, str] = {}
        for key, value in (
            ("PGHOST", hosts),
            ("PGPORT", ports),
            ("PGDATABASE", self.dbname),
            ("PGUSER", self.user),
            ("PGSSLMODE", self.sslmode),
            ("PGTARGETSESSIONATTRS", self.target_session_attrs),
            ("PGSSLROOTCERT", self.sslrootcert),
        ):
            if value:
                env[key] = value
        if passfile is not None:
            env["PGPASSFILE"] = str(passfile)
        return env


class ConnectionError_(ValueError):
    """A database URL that cannot be used; the message never repeats the password."""


def parse_database_url(url: str, sslmode: str | None = None) -> ConnectionParams:
    """Resolve a postgresql:// URL as the driver does.

    That takes in libpq's PG* variables, passfile and service file, multi-host lists,
    target_session_attrs, sslrootcert/sslcert/sslkey. A setting the driver cannot honour is
    refused by name; nothing is silently dropped.
    """
    try:
        # asyncpg's own resolution (private, hence the pinned minor in pyproject.toml): the very
        # code that will connect, so what is described, checked and dumped is what is connected to.
        addresses, resolved = connect_utils._parse_connect_dsn_and_args(
            dsn=url, host=None, port=None, user=None, password=None, passfile=None, database=None,
            ssl=sslmode, service=None, servicefile=None, direct_tls=None, server_settings=None,
            target_session_attrs=None, krbsrvname=None, gsslib=None,
        )  # fmt: skip
    except (ValueError, asyncpg.ClientConfigurationError, OSError) as error:
        raise ConnectionError_(f"database URL: {_one_line(error, url)}") from None
    refused = sorted(set(resolved.server_settings or {}) & LIBPQ_SETTINGS_NOT_HONOURED)
    if refused:
        raise ConnectionError_(
            f"database URL: {', '.join(refused)}: a libpq setting the driver (asyncpg) cannot honour; remove it"
        )
    hosts = tuple(_address(address) for address in addresses)
    for _, port in hosts:
        if port is not None and not 0 < port < 65536:
            raise ConnectionError_(f"database URL: port {port} is not between 1 and 65535")
    for what, value in (
        ("database name", resolved.database),
        ("user", resolved.user),
        ("host", hosts[0][0] if hosts else None),
    ):
        if value and "\x00" in value:
            raise ConnectionError_(f"database URL: the {what} contains a NUL byte")
    mode = resolved.sslmode.name.replace("_", "-") if resolved.sslmode is not None else None
    query = parse_qs(urlsplit(url).query)
    rootcert = query["sslrootcert"][-1] if query.get("sslrootcert") else os.environ.get("PGSSLROOTCERT")
    return ConnectionParams(
        host=hosts[0][0] if hosts else None,
        port=hosts[0][1] if hosts else None,
        dbname=resolved.database,
        user=resolved.user,
        password=resolved.password,
        sslmode=mode if (sslmode or mode != "prefer" or rootcert) else None,
        hosts=hosts if len(hosts) > 1 else (),
        target_session_attrs=(
            resolved.target_session_attrs.value if resolved.target_session_attrs.value != "any" else None
        ),
        sslrootcert=rootcert,
        ssl_context=resolved.ssl if isinstance(resolved.ssl, ssl_module.SSLContext) else None,
    )


def _address(address: tuple[str, int] | str) -> tuple[str, int | None]:
    """A (host, port) from the driver's address: a TCP pair, or a socket file path ".../.s.PGSQL.<port>"."""
    if isinstance(address, tuple):
        return address[0], address[1]
    directory, _, name = address.rpartition("/")
    port = name.removeprefix(".s.PGSQL.")
    return directory or "/", int(port) if port.isdigit() else None


def _one_line(error: BaseException, url: str) -> str:
    """The driver's message on one line, without the password the URL may hold."""
    text = " ".join(str(error).split()) or type(error).__name__
    try:
        password = urlsplit(url).password
    except ValueError:  # a URL even the standard library cannot split (an unclosed IPv6 bracket)
        return text
    return text.replace(password, "********") if password else text


def server_ca_context(ca_pem: str, sslmode: str | None) -> ssl_module.SSLContext:
    """TLS that trusts one CA (a Secret's ca.crt); host names are checked under verify-full only."""
    context = ssl_module.create_default_context(cadata=ca_pem)
    context.check_hostname = sslmode == "verify-full"
    return context


def params_from_secret(data: dict[str, str], sslmode: str | None = None, ca_pem: str | None = None) -> ConnectionParams:
    """Connection parameters from a Secret's decoded keys (CloudNativePG's app-secret layout).

    With a CA (the Secret's own ``ca.crt`` or one from spec.database.caSecretRef), the server's
    certificate is verified against it; libpq does the same under ``require`` when it has a root
    certificate, so ``require`` verifies the CA too, and ``verify-full`` the host name as well.
    """
    if data.get("uri"):
        params = parse_database_url(data["uri"], sslmode)
        if params.password is None and data.get("password"):
            params = dataclasses.replace(params, password=data["password"])
    else:
        missing = [key for key in ("host", "dbname") if not data.get(key)]
        if not (data.get("user") or data.get("username")):
            missing.append("user")
        if missing:
            raise ConnectionError_(f"secret lacks key(s) {', '.join(missing)} (or a 'uri' key)")
        port = data.get("port")
        if port is not None and not port.isdigit():
            raise ConnectionError_("secret key 'port' is not a number")
        params = ConnectionParams(
            host=data["host"],
            port=int(port) if port else None,
            dbname=data["dbname"],
            user=data.get("user") or data.get("username"),
            password=data.get("password"),
            sslmode=sslmode,
        )
    if ca_pem is None:
        return params
    mode = params.sslmode or "verify-full"  # a CA given and no mode: verify, as CloudNativePG's clients do
    if mode not in _VERIFYING_MODES:
        raise ConnectionError_(f"a CA is given but sslMode is {mode}, which would not use it")
    try:
        context = server_ca_context(ca_pem, mode)
    except (ssl_module.SSLError, ValueError) as error:
        raise ConnectionError_(f"the CA certificate cannot be read: {_one_line(error, '')}") from None
    return dataclasses.replace(params, sslmode=mode, ssl_context=context)


async def connect(
    params: ConnectionParams, *, timeout: float = 10.0, command_timeout: float | None = None
) -> asyncpg.Connection:
    """Open a session with the pinned search_path; failures name the server, never the password.

    ``command_timeout`` bounds every call on the session, COPY streams included.
    """
    addresses = params.hosts or ((params.host, params.port),)
    try:
        return await asyncpg.connect(
            host=[host for host, _ in addresses] if params.hosts else params.host,
            port=[port for _, port in addresses] if params.hosts else params.port,
            database=params.dbname,
            user=params.user,
            password=params.password,
            ssl=params.ssl_argument(),
            target_session_attrs=params.target_session_attrs,
            timeout=timeout,
            command_timeout=command_timeout,
            server_settings={"search_path": PINNED_SEARCH_PATH, "application_name": APPLICATION_NAME},
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        detail = str(error) or f"no answer within {timeout:g}s"
        if params.password:
            detail = detail.replace(params.password, "********")
        raise DatabaseUnavailable(f"cannot connect to {params.describe()}: {detail}") from None


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached; retrying may help."""


async def set_timeouts(
    conn: asyncpg.Connection, lock_timeout: str, statement_timeout: str, *, local: bool = True
) -> None:
    """Bound how long a statement waits for locks and runs: for this transaction only, or the session.

    SET LOCAL by default, so the bound dies with the transaction and never leaks into a pooled
    session; a session-wide bound is reset by its caller (RESET lock_timeout, statement_timeout).
    """
    from ..api import pg_setting_duration  # the spec's grammar (1h30m) as PostgreSQL's milliseconds

    await conn.execute("SELECT pg_catalog.set_config('lock_timeout', $1, $2)", pg_setting_duration(lock_timeout), local)
    await conn.execute(
        "SELECT pg_catalog.set_config('statement_timeout', $1, $2)", pg_setting_duration(statement_timeout), local
    )


async def is_current_role(conn: asyncpg.Connection, role: str) -> bool:
    """Whether the session is ``role`` through and through, so its code gains nothing by running as us.

    Both the current and the session user: a session that logged in as an admin and SET ROLE to
    the application (spec.database.adminSecretRef) is escaped by a RESET ROLE in that role's code.
    """
    return bool(await conn.fetchval("SELECT pg_catalog.current_user() = $1 AND pg_catalog.session_user() = $1", role))


async def create_owner_function(
    conn: asyncpg.Connection, role: str, name: str, arguments: str, returns: str, body: str
) -> str:
    """A plpgsql SECURITY DEFINER function ``pg_temp.<name>(arguments)`` owned by ``role``; its qualified name.

    A table owner's code (a CHECK constraint, a default, an index expression, a materialized
    view's query) runs with the privileges of whoever runs the statement. PostgreSQL's own
    maintenance commands switch to the table's owner in a security-restricted operation for this
    reason (CVE-2022-1552). SQL cannot enter that state, and ``SET ROLE`` alone is escaped by a
    ``RESET ROLE`` in the owner's code; but SET ROLE and SET SESSION AUTHORIZATION are refused
    inside a SECURITY DEFINER function. So such statements run inside one owned by the role, with a
    pinned search_path, in this session's pg_temp: no other session ever sees it.
    """
    function = f"pg_temp.{quote_ident(name)}"
    signature = f"{function}({arguments})"
    tag = "$vmig_" + secrets.token_hex(8) + "$"  # a dollar quote the body cannot contain by chance
    if tag in body:
        raise ValueError("the function body contains its own quote")
    await conn.execute(
        f"CREATE OR REPLACE FUNCTION {signature} RETURNS {returns} LANGUAGE plpgsql SECURITY DEFINER"
        f" SET search_path = pg_catalog, pg_temp AS {tag}{body}{tag}"
    )
    await conn.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    await conn.execute(f"ALTER FUNCTION {signature} OWNER TO {quote_ident(role)}")
    return function


async def run_as_role(conn: asyncpg.Connection, role: str, statement: str) -> None:
    """Run one statement as ``role``, so the role's own code it evaluates cannot use our privileges.

    The function (create_owner_function) is created and dropped in a savepoint of the caller's
    transaction.
    """
    if await is_current_role(conn, role):
        await conn.execute(statement)
        return
    name = "vector_migration_as_" + hashlib.sha256(role.encode()).hexdigest()[:16]
    async with conn.transaction():
        function = await create_owner_function(conn, role, name, "pg_catalog.text", "void", " BEGIN EXECUTE $1; END ")
        await conn.execute(f"SELECT {function}($1)", statement)
        await conn.execute(f"DROP FUNCTION {function}(pg_catalog.text)")


@contextlib.asynccontextmanager
async def session(params: ConnectionParams) -> AsyncIterator[asyncpg.Connection]:
    """A connection that is always closed."""
    conn = await connect(params)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


@dataclass(frozen=True)
class PasswordFile:
    """A libpq password file for child processes: its path, and the descriptors they must inherit."""

    path: Path
    inherit: tuple[int, ...] = ()


STALE_PREFIX = "vmig-pgpass-"


@contextlib.contextmanager
def password_file(params: ConnectionParams) -> Iterator[PasswordFile | None]:
    """The password for pg_dump/pg_restore, written to no disk where the system allows.

    libpq documents PGPASSWORD as visible through ps, so children get a password file. On Linux it
    is an anonymous memory file (memfd, mode 0600) that the child inherits and reads through
    /proc/self/fd: nothing reaches a disk, and nothing outlives a killed run. Elsewhere it is a
    file in a private directory (0700) named after this process, removed afterwards; a later run
    removes the directories of runs that were killed before they could.
    """
    if not params.password:
        yield None
        return

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    # Wildcards: the file lives only as long as one child process aimed at one server.
    content = f"*:*:*:*:{escape(params.password)}\n".encode()
    if hasattr(os, "memfd_create"):
        descriptor = os.memfd_create("vmig-pgpass", 0)
        try:
            os.fchmod(descriptor, stat.S_IRUSR | stat.S_IWUSR)
            os.write(descriptor, content)
            yield PasswordFile(Path(f"/proc/self/fd/{descriptor}"), (descriptor,))
        finally:
            os.close(descriptor)
        return
    remove_stale_password_files()
    directory = Path(tempfile.mkdtemp(prefix=f"{STALE_PREFIX}{os.getpid()}-"))
    try:
        path = directory / "pgpass"
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        try:
            os.write(handle, content)
        finally:
            os.close(handle)
        yield PasswordFile(path)
    finally:
        with contextlib.suppress(OSError):
            (directory / "pgpass").unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()


def remove_stale_password_files(root: Path | None = None) -> list[Path]:
    """Remove the password directories of runs of this tool that were killed; the ones removed."""
    removed = []
    for directory in (root or Path(tempfile.gettempdir())).glob(f"{STALE_PREFIX}*-*"):
        pid = directory.name.removeprefix(STALE_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or directory.stat().st_uid != os.getuid() or _alive(int(pid)):
            continue
        for child in directory.iterdir():
            with contextlib.suppress(OSError):
                child.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()
            removed.append(directory)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
