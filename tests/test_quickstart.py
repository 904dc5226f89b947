"""The README's operator quick start, run as its script: examples/quickstart.sh, to a Ready migration.

The script runs unchanged in a shell. Its `kubectl` and `helm` are the labelled stand-ins of
tests/quickstart_stand_ins.py (there are no such binaries here yet), its `kubectl vmig` is the real
plugin, the API is the emulator, and the operator runs in this process. The database is the real
RuVector's server, because the example's target is `ruvector`: its shop has no vector index, as
RuVector 2.0.6's HNSW hides rows (docs/ruvector-findings.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import asyncpg

from tests.cluster import condition, phase, running_cluster, running_operator
from vector_migration.demo.real import RealRuvectorServer

PASSWORD = "qs-Distinctive-9w"
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "quickstart.sh"
SHOP = """
CREATE EXTENSION vector;
CREATE TABLE items (id int PRIMARY KEY, body text, embedding vector(3));
INSERT INTO items SELECT i, 'item ' || i, ARRAY[cos(i), sin(i), (i % 7) / 7.0]::real[]::vector
  FROM generate_series(1, 500) i;
"""


def stand_ins(directory: Path) -> Path:
    """A directory with `kubectl` and `helm` that run the stand-ins, to put first on PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    for tool in ("kubectl", "helm"):
        path = directory / tool
        path.write_text(f"#!{sys.executable}\nfrom tests.quickstart_stand_ins import main\nmain()\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return directory


async def test_the_quick_start_script_takes_a_migration_to_ready(
    ruvector_server: RealRuvectorServer, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(ruvector_server.uri())
    await admin.execute("CREATE DATABASE quickstart")
    await admin.close()
    conn = await asyncpg.connect(ruvector_server.uri("quickstart"))
    await conn.execute(SHOP)

    async with (
        running_cluster(tmp_path, ruvector_server.bin_dir) as (cluster, _),
        running_operator(cluster),
    ):
        tools = stand_ins(tmp_path / "bin")
        environment = {
            **os.environ,
            "PATH": f"{tools}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "KUBECONFIG": str(cluster.kubeconfig()),
            # a URL with its password, as most are (the server trusts local logins and ignores it)
            "DATABASE_URL": ruvector_server.uri("quickstart").replace("postgres:@", f"postgres:{PASSWORD}@"),
            "CHART": str(ROOT / "charts" / "vector-migration-operator"),
        }
        script = await asyncio.create_subprocess_exec(
            "bash", str(SCRIPT), cwd=ROOT, env=environment,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(script.communicate(), timeout=300)
        except TimeoutError:
            script.kill()
            raise AssertionError(f"the quick start did not finish: {await cluster.get('shop', 'shop')}") from None
        said = output.decode()

        assert script.returncode == 0, said
        done = await cluster.get("shop", namespace="shop")
        assert done is not None
        assert phase(done) == "Succeeded", done["status"].get("message")
        assert condition(done, "Ready")["status"] == "True"
        assert "condition met" in said and "Succeeded" in said  # kubectl wait, then kubectl vmig status
        assert "stand-in" in said  # what played kubectl and helm says so
        # The Secret has only a uri: the backup Job mounted the password the operator took out of it,
        # from a Secret of the migration's own, and no Job carries it in its spec
        (job,) = await cluster.list("batch/v1", "jobs", namespace="shop")
        (mounted,) = [v["secret"]["secretName"] for v in job["spec"]["template"]["spec"]["volumes"] if "secret" in v]
        assert mounted == "shop-database-password"
        assert PASSWORD not in json.dumps(job)

    column = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass"
        " AND attname = 'embedding'"
    )
    assert column == "ruvector(3)"
    assert await conn.fetchval("SELECT count(*) FROM items") == 500
    await conn.close()
