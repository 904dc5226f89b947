"""Hostile conditions: broken backups, a planted search_path, undroppable dependents, contention, load."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import asyncpg
import pytest

from tests.application import application_writing, create_shop, docs_before, final_equals_every_committed_change
from tests.reliability.harness import advance_to, migration_backend, no_sleep, stop, until
from tests.reliability.report import declare, observe, rows_lost, scenario
from tests.scenarios import condition, create_rich_database, fail_every, manifest, migration, snapshot
from vector_migration.database.backup import LocalBackup
from vector_migration.database.sql import ConnectionParams
from vector_migration.demo import EmbeddedPostgres
from vector_migration.engine.context import close_session
from vector_migration.engine.runner import run
from vector_migration.vocabulary import Phase, Reason

# ------------------------------------------------------------------------------------- backups

# A pg_dump in front of the real one: it fails, or truncates the archive it wrote.
BROKEN_PG_DUMP = {
    "fails": 'echo "pg_dump: error: connection to server lost" >&2; exit 1',
    # The custom format writes its table of contents first: a cut archive still lists every table.
    "truncated-archive": (
        '"{real}" "$@" || exit $?\n'
        'for arg in "$@"; do case "$arg" in --file=*) f="${{arg#--file=}}";; esac; done\n'
        'size=$(wc -c < "$f"); head -c $((size / 3)) "$f" > "$f.cut" && mv "$f.cut" "$f"'
    ),
}
declare("backup-fails", "pg_dump exits with an error", "BackupFailed before anything changes; no swap")
declare(
    "backup-truncated-archive",
    "pg_dump writes an archive cut to a third (its table of contents intact)",
    "BackupFailed: every data block is read back before the archive is trusted; no swap",
)


@pytest.mark.parametrize("kind", sorted(BROKEN_PG_DUMP))
async def test_a_broken_backup_stops_the_migration_before_the_swap(
    kind: str, postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    pg_dump = wrappers / "pg_dump"
    real = postgres.bin_dir / "pg_dump"
    pg_dump.write_text(
        f'#!/bin/sh\nif [ "$1" = "--version" ]; then exec "{real}" --version; fi\n'
        + BROKEN_PG_DUMP[kind].format(real=real)
        + "\n"
    )
    pg_dump.chmod(0o755)
    m = migration(database, manifest(), tmp_path / "backups", backup=LocalBackup(tmp_path / "backups", (wrappers,)))

    status = await run(m, sleep=no_sleep)

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.BACKUP_FAILED
    assert "nothing was changed" in status.message
    if kind == "truncated-archive":
        assert "pg_restore (reading every block)" in status.message
    assert await snapshot(conn) == before
    assert await conn.fetchval("SELECT to_regclass('vector_migration.journal')") is None
    observe(f"backup-{kind}", f"{status.phase.value} ({condition(status, 'Stalled').reason}); no swap", lost)


# -------------------------------------------------------------------------------- search_path


@scenario(
    "search-path-planted",
    "a database user plants functions named like catalog ones in public and sets the database's search_path",
    "the migration's sessions never call them (pinned search_path, qualified names); side-effect table empty",
)
async def test_a_planted_search_path_does_not_hijack_the_migration(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    await conn.execute(
        """
        CREATE TABLE public.hijacked (fn text, at timestamptz DEFAULT now());
        CREATE FUNCTION public.count(anyelement) RETURNS bigint LANGUAGE sql
          AS $$ INSERT INTO public.hijacked (fn) VALUES ('count') RETURNING 0::bigint $$;
        CREATE FUNCTION public.format_type(oid, integer) RETURNS text LANGUAGE sql
          AS $$ INSERT INTO public.hijacked (fn) VALUES ('format_type') RETURNING 'x' $$;
        CREATE FUNCTION public.set_config(text, text, boolean) RETURNS text LANGUAGE sql
          AS $$ INSERT INTO public.hijacked (fn) VALUES ('set_config') RETURNING 'x' $$;
        CREATE FUNCTION public.quote_ident(text) RETURNS text LANGUAGE sql
          AS $$ INSERT INTO public.hijacked (fn) VALUES ('quote_ident') RETURNING 'x' $$;
        CREATE FUNCTION public.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql
          AS $$ INSERT INTO public.hijacked (fn) VALUES ('hashtextextended') RETURNING 0::bigint $$;
        CREATE FUNCTION public.pg_try_advisory_lock(bigint) RETURNS boolean LANGUAGE sql
          AS $$ INSERT INTO public.hijacked (fn) VALUES ('pg_try_advisory_lock') RETURNING true $$;
        """
    )
    database_name = await conn.fetchval("SELECT quote_ident(current_database())")
    await conn.execute(f"ALTER DATABASE {database_name} SET search_path = public, pg_catalog")
    before = await snapshot(conn)

    status = await run(migration(database, manifest(), backup_dir), sleep=no_sleep)

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert await conn.fetchval("SELECT count(*) FROM public.hijacked") == 0
    assert lost == 0
    observe("search-path-planted", f"{status.phase.value}; 0 calls to the planted functions", lost)


# ---------------------------------------------------------------------- dependents, no CASCADE


@scenario(
    "dependent-cannot-be-recreated",
    "a dependent view cannot be created again after the conversion (CREATE VIEW fails inside the swap)",
    "the swap rolls back whole; data, pgvector and the view untouched; no statement with CASCADE ever runs",
)
async def test_a_view_that_cannot_come_back_rolls_the_swap_back_and_nothing_cascades(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    # Two guards in the database itself: any DDL statement saying CASCADE fails at once (so one
    # issued would show as its own failure), and re-creating a view fails.
    await conn.execute(
        """
        CREATE FUNCTION public.refuse_cascade() RETURNS event_trigger LANGUAGE plpgsql AS $$
          BEGIN
            IF current_query() ~* ('\\m' || 'casc' || 'ade\\M') THEN
              RAISE EXCEPTION 'vmig-test-refused-statement: %', current_query();
            END IF;
          END $$;
        CREATE EVENT TRIGGER refuse_cascade ON ddl_command_start EXECUTE FUNCTION public.refuse_cascade();
        CREATE EVENT TRIGGER refuse_cascade_drop ON sql_drop EXECUTE FUNCTION public.refuse_cascade();
        """
    )
    await fail_every(conn, "CREATE VIEW", "this view cannot be created again")
    before = await snapshot(conn)

    status = await run(migration(database, manifest(), backup_dir), sleep=no_sleep)

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert status.phase is Phase.FAILED
    assert condition(status, "Stalled").reason == Reason.SWAP_FAILED
    assert "recreate-dependent failed" in status.message and "cannot be created again" in status.message
    assert "vmig-test-refused-statement" not in status.message
    assert await snapshot(conn) == before
    assert lost == 0
    observe("dependent-cannot-be-recreated", f"{status.phase.value} ({Reason.SWAP_FAILED}); rolled back whole", lost)


# ---------------------------------------------------------------------------- lock contention


@scenario(
    "lock-contention",
    "an application transaction holds a row lock on a vector table for longer than lockTimeout (1s)",
    "the swap waits at most lockTimeout, gives up with LockTimeout, retries with backoff and then succeeds; "
    "a writer's p99 insert latency stays within lockTimeout of its baseline",
)
async def test_lock_contention_is_bounded_by_lock_timeout(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    await conn.execute("CREATE TABLE inserts_log (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
    before = await snapshot(conn)
    writer = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    holder = await asyncpg.connect(host=database.host, user=database.user, database=database.dbname)
    latencies: dict[str, list[float]] = {"baseline": [], "contended": []}
    next_id = [10_000]

    async def insert(into: str) -> None:
        started = time.perf_counter()
        next_id[0] += 1
        await writer.execute("INSERT INTO items (id, label, category) VALUES ($1, 'w', 'b')", next_id[0])
        latencies[into].append(time.perf_counter() - started)

    for _ in range(50):
        await insert("baseline")
    held = holder.transaction()
    await held.start()
    await holder.execute("UPDATE items SET label = label WHERE id = 1")
    waits: list[float] = []

    async def backoff(delay: float) -> None:
        waits.append(delay)
        if len(waits) == 2:
            await held.rollback()  # the application's transaction ends after two timeouts
        await asyncio.sleep(0.1)

    migrating = asyncio.create_task(
        run(migration(database, manifest(lockTimeout="1s"), backup_dir), sleep=backoff, max_waits=5)
    )
    await until(lambda: migration_backend(conn, "LOCK TABLE%"))
    while not migrating.done():
        await insert("contended")
        await asyncio.sleep(0.01)
    status = await migrating
    await writer.close()
    await holder.close()

    written = {str(row_id) for row_id in range(10_001, next_id[0] + 1)}  # snapshot keys are text
    now = await snapshot(conn)
    lost = rows_lost(before.rows, now.rows) + len(written - set(now.rows["public.items"]))
    baseline_p99 = _p99(latencies["baseline"])
    contended_p99 = _p99(latencies["contended"])
    assert status.phase is Phase.SUCCEEDED, status.message
    assert len(waits) >= 2  # gave up at least twice on the lock, and retried
    assert contended_p99 <= baseline_p99 + 1.0 + 0.25  # lockTimeout, and scheduling slack on 2 cores
    assert lost == 0
    observe(
        "lock-contention",
        f"gave up {len(waits)} time(s) with LockTimeout, then {status.phase.value}; writer p99 "
        f"{baseline_p99 * 1000:.0f} ms baseline, {contended_p99 * 1000:.0f} ms while contended "
        f"({len(latencies['contended'])} inserts)",
        lost,
    )


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) >= 2 else max(samples, default=0.0)


# ----------------------------------------------------------------------------- sustained writer


@scenario(
    "sustained-writer",
    "an application inserts, updates and deletes without pause through backup, swap and a concurrent reindex",
    "every write the application saw committed is in the table exactly once; Succeeded",
)
async def test_a_sustained_writer_loses_nothing_through_an_inplace_migration(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_shop(conn)
    before = await docs_before(conn)

    async with application_writing(database) as committed:
        status = await run(
            migration(database, manifest(reindex={"mode": "Concurrent"}, lockTimeout="30s"), backup_dir),
            sleep=no_sleep,
        )
        await asyncio.sleep(0.2)  # and a few writes after the migration

    assert status.phase is Phase.SUCCEEDED, status.message
    assert committed[0] > 0
    await final_equals_every_committed_change(conn, before)  # raises on any lost or doubled write
    observe("sustained-writer", f"{committed[0]} committed writes, each present once; {status.phase.value}", 0)


# ------------------------------------------------------------------ competing and changed specs


@scenario(
    "two-resources-one-database",
    "two migrations aimed at the same database run at once",
    "one holds the per-database lock; the other fails with MigrationLocked naming the holder, changing nothing",
)
async def test_two_migrations_on_one_database(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    first = migration(database, manifest(name="first"), backup_dir)
    second = migration(database, manifest(name="second"), backup_dir)

    results = await asyncio.gather(
        run(first, sleep=no_sleep, give_up_on=frozenset({Reason.MIGRATION_LOCKED})),
        run(second, sleep=no_sleep, give_up_on=frozenset({Reason.MIGRATION_LOCKED})),
    )

    phases = sorted(status.phase.value for status in results)
    loser = next(status for status in results if status.phase is Phase.FAILED)
    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert phases == ["Failed", "Succeeded"]
    assert "another migration is running" in loser.message and "backend pid" in loser.message
    assert lost == 0
    observe("two-resources-one-database", "one Succeeded, the other Failed with MigrationLocked", lost)


@scenario(
    "spec-edited-after-swap",
    "spec.verify.k is changed after the swap committed (the CRD refuses it; the engine checks again)",
    "SpecChangedAfterSwap names the field, no rollback; restoring the value lets the migration finish",
)
async def test_a_spec_edited_after_the_swap(
    database: ConnectionParams, conn: asyncpg.Connection, backup_dir: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    resource = manifest(reindex={"mode": "Concurrent"})
    first = migration(database, resource, backup_dir)
    await advance_to(first, Phase.REINDEX)
    await close_session(first)
    edited = manifest(reindex={"mode": "Concurrent"}, verify={"sampleQueries": 20, "k": 7})

    refused = await run(migration(database, edited, backup_dir, status=first.status.model_copy(deep=True)))

    assert refused.phase is Phase.FAILED
    assert condition(refused, "Stalled").reason == Reason.SPEC_CHANGED_AFTER_SWAP
    assert "spec.verify changed after the swap committed" in refused.message
    resumed = await run(migration(database, resource, backup_dir, status=first.status.model_copy(deep=True)))
    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert resumed.phase is Phase.SUCCEEDED, resumed.message
    assert lost == 0
    observe("spec-edited-after-swap", "Failed with SpecChangedAfterSwap; Succeeded once restored", lost)


@scenario(
    "operator-stopped-mid-backup",
    "the operator stops while pg_dump is writing the archive",
    "pg_dump is stopped with it (no process left writing the .partial file); the next run dumps again; Succeeded",
)
async def test_operator_stopped_while_pg_dump_runs(
    postgres: EmbeddedPostgres, database: ConnectionParams, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await create_rich_database(conn)
    before = await snapshot(conn)
    wrappers, started = tmp_path / "bin", tmp_path / "pg_dump.pid"
    wrappers.mkdir()
    real = postgres.bin_dir / "pg_dump"
    (wrappers / "pg_dump").write_text(  # a slow dump: long enough to be stopped in the middle
        f'#!/bin/sh\nif [ "$1" = "--version" ]; then exec "{real}" --version; fi\n'
        f'echo $$ > "{started}"; sleep 3; exec "{real}" "$@"\n'
    )
    (wrappers / "pg_dump").chmod(0o755)
    first = migration(database, manifest(), tmp_path / "backups", backup=LocalBackup(tmp_path / "backups", (wrappers,)))
    running = asyncio.create_task(run(first, sleep=no_sleep))
    await until(lambda: asyncio.sleep(0, result=started.exists()))
    await stop(running)
    pid = int(started.read_text())
    left_running = Path(f"/proc/{pid}").exists()  # running, or a zombie nobody waited for

    status = await run(migration(database, manifest(), tmp_path / "backups"), sleep=no_sleep)

    lost = rows_lost(before.rows, (await snapshot(conn)).rows)
    assert not left_running
    assert status.phase is Phase.SUCCEEDED, status.message
    assert lost == 0
    observe("operator-stopped-mid-backup", f"pg_dump stopped with the operator; then {status.phase.value}", lost)
