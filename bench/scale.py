"""`make bench-scale`: how each phase grows with the number of tables, on default lock settings.

A schema-per-tenant database, as issue "Scale" found it: N tables, each with a `vector(4)` column,
an HNSW index and five rows, on an embedded PostgreSQL whose lock settings are the defaults
(`max_locks_per_transaction` 64 x `max_connections` 100: about 6,400 slots) with `wal_level =
logical`. For each N, InPlace (in one transaction, and in batches of 100 tables) and Replicate run
on a fresh copy, each in a process of its own, so the peak RSS measured is that run's alone.
InPlace's one transaction stops fitting at some N: the checklist then refuses it with its numbers
(recorded as such, not as a failure of the bench).

Writes bench/results/<date>-scale-tables.json (with --strategies, a subset: its names in the file's)
and prints each phase's seconds against N, and the
exponent fitted between the two largest N (1.0 is linear). The target is the RuVector STAND-IN
(pgvector's C code under RuVector's names): these rows measure the engine's work per table.

    .venv/bin/python bench/scale.py --tables 10 100 1000 2000 [--strategies InPlaceBatches]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/replication.py's settings for a logical server

from tests.replication import make_logical  # noqa: E402
from vector_migration.api import parse_manifest  # noqa: E402
from vector_migration.database.backup import LocalBackup  # noqa: E402
from vector_migration.database.sql import ConnectionParams  # noqa: E402
from vector_migration.demo import EmbeddedPostgres, create_database  # noqa: E402
from vector_migration.engine.context import Migration, RunInputs  # noqa: E402
from vector_migration.engine.runner import run  # noqa: E402
from vector_migration.vocabulary import Phase  # noqa: E402

TARGET = "ruvector_standin"
# Each measured way, and what its spec adds: InPlace in one transaction, InPlace in batches of 100 tables
# (inPlace.tablesPerBatch), and Replicate.
STRATEGIES: dict[str, dict[str, Any]] = {
    "InPlace": {"strategy": "InPlace"},
    "InPlaceBatches": {"strategy": "InPlace", "inPlace": {"tablesPerBatch": 100}},
    "Replicate": {"strategy": "Replicate", "replicate": {"keepOldFor": "0s", "dropOld": True}},
}
# Tables made per transaction while seeding: all at once would run out of locks, as the issue found.
SEED_BATCH = 100
PHASES = ("checklist", "swap", "backfill", "reindex", "verify", "finalize")


def tenant_tables(first: int, count: int) -> str:
    """Tables first..first+count-1, as the issue's multi-tenant SaaS made them."""
    return "".join(
        f"CREATE TABLE tenant_{i} (id int PRIMARY KEY, embedding vector(4));"
        f"INSERT INTO tenant_{i} SELECT g, ARRAY[g, {i % 97}, g * 2, 1]::real[]::vector FROM generate_series(1, 5) g;"
        f"CREATE INDEX tenant_{i}_embedding ON tenant_{i} USING hnsw (embedding vector_l2_ops);"
        for i in range(first, first + count)
    )


async def seed(server: EmbeddedPostgres, name: str, tables: int) -> ConnectionParams:
    """A database of ``tables`` tenant tables, made SEED_BATCH tables to a transaction."""
    await create_database(server.params(), name)
    params = server.params(name)
    conn = await asyncpg.connect(host=params.host, port=params.port, user=params.user, database=name)
    try:
        await conn.execute("CREATE EXTENSION vector")
        for first in range(0, tables, SEED_BATCH):
            await conn.execute(tenant_tables(first, min(SEED_BATCH, tables - first)))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return params


async def one_run(params: ConnectionParams, strategy: str, work: Path) -> dict[str, Any]:
    """One migration, in this process: its outcome, each phase's seconds, and this process's peak RSS."""
    document = {
        "apiVersion": "ruvector.dev/v1alpha1",
        "kind": "VectorMigration",
        "metadata": {"name": f"scale-{strategy.lower()}"},
        "spec": {
            **STRATEGIES[strategy],
            "target": {"extension": TARGET},
            "backup": {"enabled": False},
            "verify": {"sampleQueries": 5, "k": 3},
        },
    }
    spec = parse_manifest(document)
    migration = Migration(RunInputs(spec.metadata.name, spec.spec, params, backup=LocalBackup(work / "backups")))
    started = time.perf_counter()
    status = await run(migration, reconnect_for=60)
    wall = time.perf_counter() - started
    refused = status.phase is Phase.FAILED and any(c.reason == "LockTableTooSmall" for c in status.conditions)
    return {
        "phase": status.phase.value,
        "refused_for_locks": refused,
        "message": status.message if status.phase is not Phase.SUCCEEDED else None,
        "wall_s": round(wall, 3),
        "timings": {key: round(value, 3) for key, value in status.timings.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def exponent(small: tuple[int, float], large: tuple[int, float]) -> float | None:
    """The fitted exponent between two (N, seconds) points: 1.0 grows linearly with N."""
    (n1, t1), (n2, t2) = small, large
    if t1 <= 0 or t2 <= 0 or n1 == n2:
        return None
    return round(math.log(t2 / t1) / math.log(n2 / n1), 2)


def report(result: dict[str, Any]) -> None:
    """Each strategy's phases against N, as a table."""
    for strategy in result["strategies"]:
        print(f"\n{strategy}")
        print("  tables  " + "  ".join(f"{p:>9}" for p in PHASES) + "  blocked_s   wall_s  rss_MB  outcome")
        for count, runs in sorted(result["tables"].items(), key=lambda item: int(item[0])):
            measured = runs[strategy]
            timings = measured["timings"]
            cells = "  ".join(f"{timings.get(f'{p}Seconds', 0.0):9.2f}" for p in PHASES)
            blocked = timings.get("writeBlockedSeconds", 0.0)
            outcome = "refused (locks)" if measured["refused_for_locks"] else measured["phase"]
            print(f"  {int(count):6d}  {cells}  {blocked:9.3f}  {measured['wall_s']:7.1f}  "
                  f"{measured['peak_rss_mb']:6.1f}  {outcome}")  # fmt: skip
        print("  exponent between the two largest N: " + json.dumps(result["exponents"].get(strategy, {})))


def fitted(result: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per strategy and phase, the exponent between the two largest N where both runs succeeded."""
    exponents: dict[str, dict[str, float | None]] = {}
    for strategy in result["strategies"]:
        points = sorted(
            (int(count), runs[strategy]["timings"])
            for count, runs in result["tables"].items()
            if runs[strategy]["phase"] == "Succeeded"
        )
        if len(points) < 2:
            continue
        (n1, t1), (n2, t2) = points[-2], points[-1]
        keys = [f"{p}Seconds" for p in PHASES] + ["writeBlockedSeconds"]
        exponents[strategy] = {key: exponent((n1, t1.get(key, 0.0)), (n2, t2.get(key, 0.0))) for key in keys}
    return exponents


async def drive(counts: list[int], strategies: list[str], work: Path) -> dict[str, Any]:
    """Every N, every strategy asked for, each migration in a child process on a fresh database."""
    server = EmbeddedPostgres(work / "pg" / "data")
    try:
        await asyncio.to_thread(make_logical, server)
        result: dict[str, Any] = {"tables": {}, "settings": {}, "strategies": strategies}
        conn = await asyncpg.connect(host=server.params().host, port=server.params().port, user="postgres")
        try:
            for name in ("max_locks_per_transaction", "max_connections", "max_prepared_transactions"):
                result["settings"][name] = await conn.fetchval(f"SELECT current_setting('{name}')")
        finally:
            await conn.close()
        for count in counts:
            runs = {}
            for strategy in strategies:
                name = f"scale_{strategy.lower()}_{count}"
                started = time.perf_counter()
                params = await seed(server, name, count)
                print(f"{count} tables seeded in {time.perf_counter() - started:.1f}s; {strategy}...", flush=True)
                child = [sys.executable, __file__, "--one", strategy, "--host", params.host or "",
                         "--port", str(params.port), "--database", name, "--work", str(work)]  # fmt: skip
                ran = await asyncio.to_thread(subprocess.run, child, check=True, capture_output=True, text=True)
                output = ran.stdout
                runs[strategy] = json.loads(output.strip().splitlines()[-1])
            result["tables"][str(count)] = runs
        result["exponents"] = fitted(result)
        return result
    finally:
        server.stop()


def main() -> None:
    """Measure every N (or, with --one, one migration in this process)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, nargs="+", default=[10, 100, 1000, 2000])
    parser.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    parser.add_argument("--one", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        params = ConnectionParams(host=args.host, port=args.port, dbname=args.database, user="postgres")
        print(json.dumps(asyncio.run(one_run(params, args.one, args.work))))
        return
    with tempfile.TemporaryDirectory(prefix="vmig-scale-") as directory:
        result = asyncio.run(drive(args.tables, args.strategies, Path(directory)))
    result["date"] = datetime.date.today().isoformat()
    subset = "" if args.strategies == list(STRATEGIES) else "-" + "-".join(s.lower() for s in args.strategies)
    path = ROOT / "bench" / "results" / f"{result['date']}-scale-tables{subset}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    report(result)
    print(f"\nwritten: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
