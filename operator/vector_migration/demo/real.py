"""The real RuVector, where `make ruvector` built it: its PostgreSQL 16, for the demo, the bench and the tests.

`make ruvector` builds ruvector-postgres into the PostgreSQL 16.2 of the PyPI wheel pgserver,
unpacked in a cache outside the checkout, and prints `pg_config: <path>` last. That path is
all this needs: the wheel's Python package sits four levels up and starts a server of that
installation on a data directory of the caller's.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from ..database.sql import ConnectionParams, parse_database_url

PG_CONFIG_VARIABLE = "VMIG_RUVECTOR_PG_CONFIG"
# What the demo's banner and the bench's rows name: the versions `make ruvector` pins.
BUILT = "ruvector-postgres 2.0.6 (SQL 0.3.0) on PostgreSQL 16.2 with pgvector 0.6.2"


class RealRuvectorMissing(LookupError):
    """No build of the real RuVector where one was named."""


def built_pg_config(named: Path | None = None) -> Path:
    """The `pg_config` of make ruvector's build: ``named``, else $VMIG_RUVECTOR_PG_CONFIG; it must exist."""
    candidate = named or (Path(os.environ[PG_CONFIG_VARIABLE]) if os.environ.get(PG_CONFIG_VARIABLE) else None)
    if candidate is None:
        raise RealRuvectorMissing(
            f"the real RuVector is not built here: run make ruvector and name its last line's path "
            f"(--ruvector-pg-config, or {PG_CONFIG_VARIABLE})"
        )
    if not candidate.is_file():
        raise RealRuvectorMissing(f"{candidate} is not make ruvector's pg_config (no such file)")
    return candidate


class RealRuvectorServer:
    """PostgreSQL 16 with pgvector and the real RuVector, on ``pgdata``; ``logical`` for Replicate."""

    def __init__(self, pg_config: Path, pgdata: Path, *, logical: bool = False) -> None:
        home = pg_config.resolve().parents[3]  # <home>/pgserver/pginstall/bin/pg_config
        sys.path.insert(0, str(home))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
                import pgserver  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(home))
        self.bin_dir = pg_config.parent
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata = pgdata
        self.server: Any = pgserver.get_server(pgdata, cleanup_mode="stop")
        if logical:
            # Replicate's new databases follow and are followed: logical WAL, read at a restart
            self.server.psql(
                "ALTER SYSTEM SET wal_level = logical; ALTER SYSTEM SET max_replication_slots = 30;"
                " ALTER SYSTEM SET max_wal_senders = 30; ALTER SYSTEM SET max_worker_processes = 30;"
                " ALTER SYSTEM SET max_logical_replication_workers = 20;"
            )
            self.server.cleanup()
            self.server = pgserver.get_server(pgdata, cleanup_mode="stop")

    def uri(self, dbname: str = "postgres") -> str:
        """A libpq URI of one of its databases (a Unix socket in its data directory's tree)."""
        uri: str = self.server.get_uri(database=dbname)
        return uri

    def params(self, dbname: str = "postgres") -> ConnectionParams:
        """The same, as the engine's connection parameters."""
        return parse_database_url(self.uri(dbname))

    def stop(self) -> None:
        """Stop the server (its data directory stays)."""
        self.server.cleanup()
