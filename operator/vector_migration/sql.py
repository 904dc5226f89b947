"""Quoting, sessions and connection parameters: the only place SQL text meets names.

Every identifier the engine writes into SQL goes through :func:`quote_ident` (or
:func:`qualify`, built on it); every value travels as a bind parameter. DDL cannot take bind
parameters, so the few literals DDL needs (storage parameters, setting values) go through
:func:`quote_literal`, which is only ever applied to values read back from the catalog or
validated by the API models.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

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


def operator_ref(schema: str, operator: str) -> str:
    """A schema-qualified operator; operator names are symbols, checked rather than quoted."""
    if not operator or any(char not in "+-*/<>=~!@#%^&|`?" for char in operator):
        raise ValueError(f"not an operator name: {operator!r}")
    return f"OPERATOR({quote_ident(schema)}.{operator})"


@dataclass(frozen=True)
class ConnectionParams:
    """libpq connection parameters; the password is never part of repr() or str()."""

    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None

    def describe(self) -> str:
        """A secret-free description for messages and logs."""
        where = self.host or "localhost"
        port = f":{self.port}" if self.port else ""
        return f"{self.user or '(default user)'}@{where}{port}/{self.dbname or '(default database)'}"

    def with_database(self, dbname: str) -> ConnectionParams:
        """The same server, another database."""
        return ConnectionParams(self.host, self.port, dbname, self.user, self.password, self.sslmode)

    def libpq_environment(self, passfile: Path | None) -> dict[str, str]:
        """Environment for pg_dump/pg_restore: parameters as PG* variables, the password only in a file."""
        env: dict[str, str] = {}
        for key, value in (
            ("PGHOST", self.host),
            ("PGPORT", str(self.port) if self.port else None),
            ("PGDATABASE", self.dbname),
            ("PGUSER", self.user),
            ("PGSSLMODE", self.sslmode),
        ):
            if value:
                env[key] = value
        if passfile is not None:
            env["PGPASSFILE"] = str(passfile)
        return env


class ConnectionError_(ValueError):
    """A database URL that cannot be used; the message never repeats the password."""


def parse_database_url(url: str, sslmode: str | None = None) -> ConnectionParams:
    """Parse a postgresql:// URL (host may be a socket directory given as ?host=/path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConnectionError_("database URL must start with postgresql://")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        port = parts.port
    except ValueError:
        raise ConnectionError_("database URL has an invalid port") from None
    host = unquote(parts.hostname) if parts.hostname else query.get("host")
    if "port" in query and port is None:
        if not query["port"].isdigit():
            raise ConnectionError_("database URL has an invalid port")
        port = int(query["port"])
    return ConnectionParams(
        host=host,
        port=port,
        dbname=unquote(parts.path.lstrip("/")) or query.get("dbname"),
        user=unquote(parts.username) if parts.username else query.get("user"),
        password=unquote(parts.password) if parts.password else query.get("password"),
        sslmode=sslmode or query.get("sslmode"),
    )


def params_from_secret(data: dict[str, str], sslmode: str | None = None) -> ConnectionParams:
    """Connection parameters from a Secret's decoded keys (CloudNativePG's app-secret layout)."""
    if data.get("uri"):
        params = parse_database_url(data["uri"], sslmode)
        if params.password is None and data.get("password"):
            params = ConnectionParams(
                params.host, params.port, params.dbname, params.user, data["password"], params.sslmode
            )
        return params
    missing = [key for key in ("host", "dbname") if not data.get(key)]
    if not (data.get("user") or data.get("username")):
        missing.append("user")
    if missing:
        raise ConnectionError_(f"secret lacks key(s) {', '.join(missing)} (or a 'uri' key)")
    port = data.get("port")
    if port is not None and not port.isdigit():
        raise ConnectionError_("secret key 'port' is not a number")
    return ConnectionParams(
        host=data["host"],
        port=int(port) if port else None,
        dbname=data["dbname"],
        user=data.get("user") or data.get("username"),
        password=data.get("password"),
        sslmode=sslmode,
    )


async def connect(params: ConnectionParams, *, timeout: float = 10.0) -> asyncpg.Connection:
    """Open a session with the pinned search_path; failures name the server, never the password."""
    ssl: Any = None
    if params.sslmode in ("require", "verify-ca", "verify-full", "prefer", "allow", "disable"):
        ssl = params.sslmode
    try:
        return await asyncpg.connect(
            host=params.host,
            port=params.port,
            database=params.dbname,
            user=params.user,
            password=params.password,
            ssl=ssl,
            timeout=timeout,
            server_settings={"search_path": PINNED_SEARCH_PATH, "application_name": APPLICATION_NAME},
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        detail = str(error)
        if params.password:
            detail = detail.replace(params.password, "********")
        raise DatabaseUnavailable(f"cannot connect to {params.describe()}: {detail}") from None


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached; retrying may help."""


async def set_local_timeouts(conn: asyncpg.Connection, lock_timeout: str, statement_timeout: str) -> None:
    """Bound how long a statement waits for locks and runs, for this transaction only.

    SET LOCAL so the bound dies with the transaction and never leaks into a pooled session.
    """
    await conn.execute("SELECT pg_catalog.set_config('lock_timeout', $1, true)", lock_timeout)
    await conn.execute("SELECT pg_catalog.set_config('statement_timeout', $1, true)", statement_timeout)


@contextlib.asynccontextmanager
async def session(params: ConnectionParams) -> AsyncIterator[asyncpg.Connection]:
    """A connection that is always closed."""
    conn = await connect(params)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


@contextlib.contextmanager
def password_file(params: ConnectionParams) -> Iterator[Path | None]:
    """A libpq password file (mode 0600) for child processes, removed afterwards.

    libpq documents PGPASSWORD as visible through ps; a password file is not.
    """
    if not params.password:
        yield None
        return

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    handle, name = tempfile.mkstemp(prefix="vmig-pgpass-")
    path = Path(name)
    try:
        os.fchmod(handle, stat.S_IRUSR | stat.S_IWUSR)
        # Wildcards: the file lives only as long as one child process aimed at one server.
        line = "*:*:*:*"
        os.write(handle, f"{line}:{escape(params.password)}\n".encode())
        os.close(handle)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
