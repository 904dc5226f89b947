"""The Parallel strategy: the application keeps writing while its tables move to the target.

Each table gets a *shadow* with the target's types beside it. A trigger on the table (installed
in the same transaction that creates the shadow, so before the backfill reads a single row)
applies every INSERT, UPDATE, DELETE and TRUNCATE to the shadow in the writer's own transaction;
the backfill copies the existing rows in keyset batches that lock the rows they copy (FOR SHARE),
so a row deleted or updated while its batch runs is never resurrected or copied stale. Because the
trigger is synchronous, *any* snapshot sees the table and its shadow equal: verification compares
their checksums in one REPEATABLE READ transaction while writes go on.

The finalize is one short transaction: lock both tables, drop the trigger, rename the table to
``<table>_pgvector_old`` and the shadow to the table's name, and install the reverse trigger, which
keeps the old table in sync until ``parallel.keepOldFor`` has passed. So a swap back loses nothing;
after that, the old tables and the source extension are dropped (RESTRICT). Its lock window does
not depend on the table's size: it renames, it does not copy.

Phases: Checklist, Backup, (approval), Swap (create the shadows and triggers), Backfill, Reindex
(CREATE INDEX CONCURRENTLY on the shadows), Verify (the shadows), Cutover (the steps), Finalize.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from ...api import (
    CutoverStatus,
    ParallelStatus,
    ShadowTableStatus,
    TableVerification,
    VectorMigrationStatus,
    Verification,
    duration_ms,
)
from ...database import journal
from ...database.catalog import Blocker, SourceInventory, read_extension
from ...database.measure import BINARY, NORMALIZED, TEXT, IndexTarget, table_checksum
from ...database.sql import create_owner_function, is_current_role, qualify, quote_ident, quote_literal
from ...database.surface import TargetSurface, concurrent_build_bug
from ...engine.legacy import (
    Advance,
    Fail,
    Hold,
    Migration,
    Outcome,
    PhaseFunction,
    Probe,
    Wait,
    _begin_bounded_transaction,
    _drop_unused_extension,
    _index_state,
    _journal_detail,
    _judge_probes,
    _Progress,
    _restore_from_journal,
    _rollback,
    _transaction_failure,
    build_index,
    ready_to_change,
    record_success,
    run_awaiting_approval,
    run_backup_phase,
    run_checklist,
)
from ...engine.plan import ColumnConversion, MigrationPlan
from ...status import now, record_timing, seconds_since, set_condition
from ...vocabulary import JOURNAL_SCHEMA, ConditionType, Phase, Reason

PREPARED = "parallel_prepared"
BACKFILL = "parallel_backfill"
SHADOW_VERIFIED = "parallel_verified"
FINALIZED = "parallel_finalized"
OLD_DROPPED = "parallel_old_dropped"

SYNC_TRIGGER = "vector_migration_sync"
SYNC_TRUNCATE_TRIGGER = "vector_migration_sync_truncate"
MAX_IDENTIFIER_BYTES = 63


def derived_name(base: str, suffix: str) -> str:
    """``base`` + ``suffix`` within PostgreSQL's 63 bytes, never silently truncated into a collision.

    A name that would be too long keeps a prefix of the base and a hash of the whole base, so two
    long names that share their first 50 bytes still derive different names.
    """
    name = base + suffix
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode()) - len(digest) - 1
    prefix = base.encode()[:room].decode(errors="ignore")
    return f"{prefix}_{digest}{suffix}"


def _short(schema: str, table: str) -> str:
    return hashlib.sha256(f"{schema}.{table}".encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------- checklist


async def check_tables(conn: asyncpg.Connection, inventory: SourceInventory, surface: TargetSurface) -> list[Blocker]:
    """What keeps a table from moving through a shadow, each with what to do about it."""
    blockers: list[Blocker] = []
    if surface.collides:
        blockers.append(
            Blocker(
                Reason.UNSUPPORTED_STRATEGY,
                f"strategy Parallel needs {surface.extension} installed beside {inventory.source.name}, but their "
                "names collide (access methods are unique per database); use InPlace",
            )
        )
    for schema, table in inventory.tables():
        name = f"{schema}.{table}"
        facts = await conn.fetchrow(
            """
            SELECT c.oid, c.relkind, c.relrowsecurity, c.relispartition,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
                       AS inherits,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
                       AS has_primary_key,
                   ARRAY(SELECT f.conname || ' on ' || f.conrelid::pg_catalog.regclass::pg_catalog.text
                           FROM pg_catalog.pg_constraint f WHERE f.contype = 'f' AND f.confrelid = c.oid)
                       AS referenced_by,
                   ARRAY(SELECT t.tgname FROM pg_catalog.pg_trigger t
                          WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgname <> ALL($3::text[]))
                       AS triggers,
                   ARRAY(SELECT DISTINCT v.oid::pg_catalog.regclass::pg_catalog.text
                           FROM pg_catalog.pg_depend d
                           JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
                           JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
                          WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                            AND d.refobjid = c.oid AND v.oid <> c.oid)
                       AS views
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2
            """,
            schema,
            table,
            [SYNC_TRIGGER, SYNC_TRUNCATE_TRIGGER],
        )
        if facts is None:
            continue
        problems = []
        if not facts["has_primary_key"]:
            problems.append("has no primary key (the sync trigger and the backfill find rows by it)")
        if facts["relkind"] == "p" or facts["relispartition"] or facts["inherits"]:
            problems.append("is partitioned or inherits (its shadow cannot take its place in the hierarchy)")
        if facts["relrowsecurity"]:
            problems.append("has row-level security (the shadow would need its policies)")
        if facts["referenced_by"]:
            problems.append(f"is referenced by foreign key(s) {', '.join(facts['referenced_by'])}")
        if facts["triggers"]:
            problems.append(f"has trigger(s) {', '.join(facts['triggers'])} the shadow would not carry")
        if facts["views"]:
            problems.append(f"is read by view(s) {', '.join(facts['views'])}, which would keep reading the old table")
        if problems:
            blockers.append(
                Blocker(
                    Reason.BLOCKING_DEPENDENT,
                    f"table {name} cannot move through a shadow: it {'; it '.join(problems)}; use InPlace",
                )
            )
        for suffix in ("_vmig_shadow", "_pgvector_old"):
            derived = derived_name(table, suffix)
            taken = await conn.fetchval("SELECT pg_catalog.to_regclass($1) IS NOT NULL", qualify(schema, derived))
            if taken and not await _ours(conn, schema, derived):
                blockers.append(
                    Blocker(
                        Reason.BLOCKING_DEPENDENT,
                        f"table {name}: the name {schema}.{derived} the migration needs is taken; rename that table",
                    )
                )
    return blockers


async def _ours(conn: asyncpg.Connection, schema: str, table: str) -> bool:
    comment = await conn.fetchval(
        "SELECT pg_catalog.obj_description($1::pg_catalog.regclass, 'pg_class')", qualify(schema, table)
    )
    return bool(comment and comment.startswith("vector-migration"))


# ------------------------------------------------------------------------------------ the shadow


@dataclass
class ShadowTable:
    """Everything the later phases need about one table, recorded in the journal at creation."""

    schema: str
    table: str
    shadow: str
    old: str
    key: list[list[str]]  # [[column, type]] of the primary key, in key order
    columns: list[str]  # insertable (not generated) columns
    forward: dict[str, str]  # vector column -> SQL converting {value} to the target type
    backward: dict[str, str]  # vector column -> SQL converting {value} back to the source type
    vector_columns: list[str]
    index_renames: list[list[str]]  # [[shadow index, original name]]
    vector_indexes: list[dict[str, Any]]  # shadow vector indexes: name, definition, method, concurrent
    foreign_keys: list[str]  # names of foreign keys copied NOT VALID, validated after the backfill
    sequences: list[list[str]]  # [[column, owned sequence]] moved to the new table at finalize
    identities: list[list[str]]  # [[column, old identity sequence]]: the new one continues from it

    @property
    def name(self) -> str:
        """The table as schema.table, for people."""
        return f"{self.schema}.{self.table}"

    def function(self, direction: str) -> str:
        """The qualified trigger function syncing this table in a direction (sync, sync_back)."""
        return qualify(JOURNAL_SCHEMA, f"{direction}_{_short(self.schema, self.table)}")


def _cast(conversion: ColumnConversion) -> str:
    """SQL turning ``{value}`` of the source type into the target type, by the plan's cast path."""
    via = {"direct": "", "real[]": "::pg_catalog.float4[]", "text": "::pg_catalog.text"}[conversion.cast_path]
    return "{value}" + via + "::" + conversion.target_type_sql


def _sync_function(table: ShadowTable, source: str, target: str, casts: dict[str, str]) -> str:
    """A trigger function mirroring every row change of ``source`` into ``target`` (both qualified)."""
    key = [quote_ident(column) for column, _ in table.key]
    columns = [quote_ident(column) for column in table.columns]
    values = [
        casts[column].format(value=f"NEW.{quote_ident(column)}") if column in casts else f"NEW.{quote_ident(column)}"
        for column in table.columns
    ]
    old_key = ", ".join(f"OLD.{k}" for k in key)
    new_key = ", ".join(f"NEW.{k}" for k in key)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key) or f"{key[0]} = EXCLUDED.{key[0]}"
    return f"""
        BEGIN
          IF TG_OP = 'TRUNCATE' THEN
            TRUNCATE {target};
            RETURN NULL;
          END IF;
          IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ROW({old_key}) IS DISTINCT FROM ROW({new_key})) THEN
            DELETE FROM {target} WHERE ROW({", ".join(key)}) = ROW({old_key});
          END IF;
          IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO {target} ({", ".join(columns)}) OVERRIDING SYSTEM VALUE VALUES ({", ".join(values)})
            ON CONFLICT ({", ".join(key)}) DO UPDATE SET {updates};
          END IF;
          RETURN NULL;
        END
    """


async def _install_sync(
    conn: asyncpg.Connection, table: ShadowTable, direction: str, source: str, target: str, casts: dict[str, str]
) -> None:
    function = table.function(direction)
    body = _sync_function(table, source, target, casts)
    await conn.execute(
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
        f"SET search_path = pg_catalog, pg_temp AS $vmig${body}$vmig$"
    )
    await conn.execute(
        f"CREATE TRIGGER {quote_ident(SYNC_TRIGGER)} AFTER INSERT OR UPDATE OR DELETE ON {source} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()"
    )
    await conn.execute(
        f"CREATE TRIGGER {quote_ident(SYNC_TRUNCATE_TRIGGER)} AFTER TRUNCATE ON {source} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )


async def _drop_sync(conn: asyncpg.Connection, table: ShadowTable, relation: str, direction: str) -> None:
    if await conn.fetchval("SELECT pg_catalog.to_regclass($1) IS NOT NULL", relation):
        for trigger in (SYNC_TRIGGER, SYNC_TRUNCATE_TRIGGER):
            await conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(trigger)} ON {relation}")
    await conn.execute(f"DROP FUNCTION IF EXISTS {table.function(direction)}()")


async def _create_shadow(
    m: Migration, plan: MigrationPlan, surface: TargetSurface, schema: str, table: str
) -> ShadowTable:
    """The shadow of one table, empty, with the target's types, its non-vector indexes and constraints."""
    conn = m.session
    source = qualify(schema, table)
    shadow_name, old_name = derived_name(table, "_vmig_shadow"), derived_name(table, "_pgvector_old")
    shadow = qualify(schema, shadow_name)
    conversions = [c for c in plan.conversions if (c.column.schema, c.column.table) == (schema, table)]
    vector_columns = [c.column.column for c in conversions]
    key = [
        [r["attname"], r["type"]]
        for r in await conn.fetch(
            """
            SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
              FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1::pg_catalog.regclass AND i.indisprimary
             ORDER BY pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum)
            """,
            source,
        )
    ]
    columns = [
        r["attname"]
        for r in await conn.fetch(
            """
            SELECT attname FROM pg_catalog.pg_attribute
             WHERE attrelid = $1::pg_catalog.regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
             ORDER BY attnum
            """,
            source,
        )
    ]
    await conn.execute(f"CREATE TABLE {shadow} (LIKE {source} INCLUDING ALL)")
    note = f"vector-migration {m.name}: shadow of {schema}.{table} (Parallel strategy); dropped when it is done"
    await conn.execute(f"COMMENT ON TABLE {shadow} IS {quote_literal(note)}")
    # LIKE copied every index; the ones on vector columns are rebuilt on the target's methods.
    copied = await conn.fetch(
        """
        SELECT c.relname, i.indisprimary,
               EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute a
                         ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = i.indexrelid
                          AND d.refobjid = i.indrelid AND a.attname = ANY($2::text[])) AS on_vector,
               pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid), '^.* USING ', '') AS shape,
               i.indisunique
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = $1::pg_catalog.regclass ORDER BY c.oid
        """,
        shadow,
        vector_columns,
    )
    originals = await conn.fetch(
        """
        SELECT c.relname, i.indisunique, i.indisprimary,
               pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid), '^.* USING ', '') AS shape
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = $1::pg_catalog.regclass ORDER BY c.oid
        """,
        source,
    )
    renames: list[list[str]] = []
    unmatched = [dict(r) for r in originals]
    for index in copied:
        if index["on_vector"]:
            await conn.execute(f"DROP INDEX {qualify(schema, index['relname'])}")
            continue
        for original in unmatched:
            if (original["shape"], original["indisunique"], original["indisprimary"]) == (
                index["shape"],
                index["indisunique"],
                index["indisprimary"],
            ):
                renames.append([index["relname"], original["relname"]])
                unmatched.remove(original)
                break
    if conversions:
        await conn.execute(
            f"ALTER TABLE {shadow} "
            + ", ".join(
                f"ALTER COLUMN {quote_ident(c.column.column)} TYPE {c.target_type_sql} "
                f"USING {_cast(c).format(value=quote_ident(c.column.column))}"
                for c in conversions
            )
        )
    foreign_keys = []
    for fk in await conn.fetch(
        """
        SELECT conname, pg_catalog.pg_get_constraintdef(oid) AS definition FROM pg_catalog.pg_constraint
         WHERE conrelid = $1::pg_catalog.regclass AND contype = 'f' ORDER BY conname
        """,
        source,
    ):
        definition = fk["definition"].removesuffix(" NOT VALID")
        await conn.execute(f"ALTER TABLE {shadow} ADD CONSTRAINT {quote_ident(fk['conname'])} {definition} NOT VALID")
        foreign_keys.append(fk["conname"])
    owner_and_grants = await conn.fetchrow(
        """
        SELECT pg_catalog.pg_get_userbyid(c.relowner) AS owner,
               ARRAY(SELECT ARRAY[CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                                  a.privilege_type, a.is_grantable::pg_catalog.text]
                       FROM pg_catalog.aclexplode(c.relacl) a) AS grants
          FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass
        """,
        source,
    )
    for grantee, privilege, grantable in owner_and_grants["grants"]:
        if privilege not in _GRANTABLE:
            continue
        who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
        option = " WITH GRANT OPTION" if grantable == "true" else ""
        await conn.execute(f"GRANT {privilege} ON {shadow} TO {who}{option}")
    await conn.execute(f"ALTER TABLE {shadow} OWNER TO {quote_ident(owner_and_grants['owner'])}")
    # Owned sequences (serial) move to the new table; identity columns got a sequence of their own
    # from LIKE, which continues from the old one at the finalize.
    owned = await conn.fetch(
        """
        SELECT a.attname, pg_catalog.pg_get_serial_sequence($1, a.attname) AS sequence, a.attidentity <> '' AS identity
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND pg_catalog.pg_get_serial_sequence($1, a.attname) IS NOT NULL
        """,
        source,
    )
    sequences = [[r["attname"], r["sequence"]] for r in owned if not r["identity"]]
    identities = [[r["attname"], r["sequence"]] for r in owned if r["identity"]]
    vector_indexes = []
    for rebuild in plan.rebuilds:
        if (rebuild.saved.table_schema, rebuild.saved.table) != (schema, table):
            continue
        # A target whose concurrent build is known to be broken gets its index now, on the empty
        # shadow: the backfill then fills it row by row, and no build ever locks the shadow.
        concurrent = concurrent_build_bug(surface, rebuild.method) is None
        name = derived_name(rebuild.saved.name, "_vmig")
        definition = rebuild.definition_on(schema, shadow_name, name, concurrently=concurrent)
        if not concurrent:
            await conn.execute(definition)
        vector_indexes.append(
            {"name": name, "original": rebuild.saved.name, "definition": definition, "method": rebuild.method}
        )
        renames.append([name, rebuild.saved.name])
    forward = {c.column.column: _cast(c) for c in conversions}
    backward = {
        c.column.column: "{value}::pg_catalog.text::"
        + qualify(c.column.type_schema, c.column.type_name)
        + (f"({c.column.dims})" if c.column.dims else "")
        for c in conversions
    }
    made = ShadowTable(
        schema, table, shadow_name, old_name, key, columns, forward, backward, vector_columns,
        renames, vector_indexes, foreign_keys, sequences, identities,
    )  # fmt: skip
    await _install_sync(conn, made, "sync", source, shadow, forward)
    return made


_GRANTABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"})


def _tables(entry: journal.JournalEntry) -> list[ShadowTable]:
    return [ShadowTable(**t) for t in entry.detail["shadows"]]


async def _recorded(m: Migration) -> tuple[dict[str, journal.JournalEntry], list[ShadowTable] | None]:
    """The journal, and the shadow tables it records (None before they exist), with the facts loaded."""
    entries = await journal.read(m.session, m.name)
    prepared = entries.get(PREPARED)
    if prepared is None:
        return entries, None
    if not m.facts.swap_loaded:
        _restore_from_journal(m, prepared)
        set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.IN_PROGRESS, "", m.generation)
    return entries, _tables(prepared)


# A phase after the shadows were made, run where the journal records none: plan again from the start.
_START_OVER = Advance(Phase.CHECKLIST, "no shadow tables are recorded; starting from the checklist")


# ------------------------------------------------------------------------------------- phases


async def run_prepare(m: Migration) -> Outcome:
    """Create the target beside the source, a shadow per table and the sync triggers: one transaction."""
    conn = m.session
    _, shadows = await _recorded(m)
    if shadows is not None:
        return Advance(Phase.BACKFILL, "the shadow tables already exist; continuing with the backfill")
    ready = ready_to_change(m, "creating the shadow tables")
    if not isinstance(ready, tuple):
        return ready
    plan, inventory, surface = ready
    facts = m.facts
    progress = _Progress()
    transaction = await _begin_bounded_transaction(m)
    try:
        progress.step = "create-target-extension"
        created = await read_extension(conn, surface.extension) is None
        if created:
            schema = m.spec.target.target_schema or inventory.source.schema
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
            create = next(s for s in plan.swap if s.step == "create-target-extension")
            await conn.execute(create.sql)
        await journal.ensure(conn)
        shadows = []
        for schema, table in inventory.tables():
            progress.step = f"shadow {schema}.{table}"
            shadows.append(await _create_shadow(m, plan, surface, schema, table))
        facts.rebuilds = []
        facts.swap_loaded = True
        by_original = {(t.schema, i["original"]): (t.shadow, i["name"]) for t in shadows for i in t.vector_indexes}
        for probe in facts.probes:
            shadow_table, shadow_index = by_original[(probe.after.schema, probe.index)]
            probe.after = IndexTarget(**{**asdict(probe.after), "table": shadow_table, "index_name": shadow_index})
        m.status.parallel = ParallelStatus(
            tables=[
                ShadowTableStatus(
                    name=t.name,
                    shadow=f"{t.schema}.{t.shadow}",
                    rows_total=inventory.row_counts.get((t.schema, t.table), 0),
                )
                for t in shadows
            ]
        )
        detail = _journal_detail(m)
        detail["shadows"] = [asdict(t) for t in shadows]
        detail["createdExtension"] = created
        await journal.record(conn, m.name, PREPARED, plan.plan_hash, detail)
        await transaction.commit()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await _rollback(transaction)
        return _transaction_failure(error, progress, m.spec, "shadow")
    message = (
        f"{len(shadows)} shadow table(s) with {surface.extension}'s types beside the originals; "
        "triggers keep them in sync from now on"
    )
    return Advance(Phase.BACKFILL, message)


async def run_backfill(m: Migration) -> Outcome:
    """Copy the existing rows into the shadows in keyset batches; the cursor commits with each batch."""
    conn = m.session
    entries, tables = await _recorded(m)
    if tables is None:
        return _START_OVER
    cursors: dict[str, Any] = dict(entries[BACKFILL].detail["tables"]) if BACKFILL in entries else {}
    spec = m.spec.parallel
    parallel = m.status.parallel or ParallelStatus()
    progress = {t.name: t for t in parallel.tables}
    for table in tables:
        cursor = cursors.setdefault(table.name, {"last": None, "copied": 0, "done": False})
        shown = progress.setdefault(
            table.name, ShadowTableStatus(name=table.name, shadow=f"{table.schema}.{table.shadow}")
        )
        statement = await _batch_statement(conn, table)
        while not cursor["done"]:
            started = time.perf_counter()
            async with conn.transaction():
                row = await conn.fetchrow(statement, cursor["last"], spec.batch_size)
                copied = row["rows"]
                if copied:
                    cursor["last"] = list(row["last"])
                    cursor["copied"] += copied
                if copied < spec.batch_size:
                    cursor["done"] = True
                await journal.record(conn, m.name, BACKFILL, m.status.plan_hash or "", {"tables": cursors})
            shown.rows_copied = cursor["copied"]
            m.reporter.progress(f"backfill {table.name}", cursor["copied"], shown.rows_total or None)
            if spec.rows_per_second and copied:
                await asyncio.sleep(max(0.0, copied / spec.rows_per_second - (time.perf_counter() - started)))
        shown.backfilled = True
        m.reporter.task_done(f"backfill {table.name}")
        for name in table.foreign_keys:
            # NOT VALID while the rows arrived; validating takes no lock that blocks the triggers' writes.
            await conn.execute(
                f"ALTER TABLE {qualify(table.schema, table.shadow)} VALIDATE CONSTRAINT {quote_ident(name)}"
            )
    parallel.tables = list(progress.values())
    m.status.parallel = parallel
    total = sum(c["copied"] for c in cursors.values())
    return Advance(Phase.REINDEX, f"backfilled {total} row(s) into {len(tables)} shadow table(s)")


async def _batch_statement(conn: asyncpg.Connection, table: ShadowTable) -> str:
    """The batch to run: as it is when this role owns the table, else through a function run as the owner.

    Inserting into the shadow evaluates its CHECK constraints and defaults, the table owner's code;
    the owner's SECURITY DEFINER function runs it with the owner's privileges, and PostgreSQL
    refuses SET ROLE inside it (see sql.run_as_role). The function lives in this session's pg_temp,
    seen by no other session and gone with this one; a reconnected run creates it again.
    """
    statement = _batch_sql(table)
    owner = await conn.fetchval(
        "SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid = $1::pg_catalog.regclass",
        qualify(table.schema, table.table),
    )
    if await is_current_role(conn, owner):
        return statement
    function = await create_owner_function(
        conn,
        owner,
        "vector_migration_batch_" + _short(table.schema, table.table),
        "pg_catalog.text[], pg_catalog.int4",
        "TABLE (copied_rows pg_catalog.int8, last_key pg_catalog.text[])",
        f" #variable_conflict use_column\n BEGIN RETURN QUERY {statement}; END ",
    )
    return f"SELECT copied_rows AS rows, last_key AS last FROM {function}($1, $2)"


def _batch_sql(table: ShadowTable) -> str:
    """One keyset batch: lock the next rows (FOR SHARE), copy them converted, return the last key.

    FOR SHARE makes a concurrent DELETE or UPDATE of a row in the batch wait for the batch (then its
    trigger applies it to the shadow), and a batch that meets a row already changed reads its newest
    version; ON CONFLICT DO NOTHING keeps what the trigger already wrote, which is never older.
    """
    source = qualify(table.schema, table.table)
    shadow = qualify(table.schema, table.shadow)
    key = [quote_ident(column) for column, _ in table.key]
    after = ", ".join(f"($1::pg_catalog.text[])[{n}]::{kind}" for n, (_, kind) in enumerate(table.key, start=1))
    columns = [quote_ident(c) for c in table.columns]
    values = [
        table.forward[c].format(value=f"b.{quote_ident(c)}") if c in table.forward else f"b.{quote_ident(c)}"
        for c in table.columns
    ]
    order = ", ".join(key)
    return f"""
        WITH batch AS (
            SELECT * FROM {source}
             WHERE $1::pg_catalog.text[] IS NULL OR ROW({order}) > ROW({after})
             ORDER BY {order} LIMIT $2 FOR SHARE
        ), copied AS (
            INSERT INTO {shadow} ({", ".join(columns)}) OVERRIDING SYSTEM VALUE
            SELECT {", ".join(values)} FROM batch b ORDER BY {", ".join(f"b.{k}" for k in key)}
            ON CONFLICT ({order}) DO NOTHING
        )
        SELECT (SELECT pg_catalog.count(*) FROM batch) AS rows,
               (SELECT ARRAY[{", ".join(f"{k}::pg_catalog.text" for k in key)}] FROM batch
                 ORDER BY {", ".join(f"{k} DESC" for k in key)} LIMIT 1) AS last
    """


async def run_shadow_reindex(m: Migration) -> Outcome:
    """CREATE INDEX CONCURRENTLY on the shadows: the application's writes never wait for a build."""
    _, tables = await _recorded(m)
    if tables is None:
        return _START_OVER
    built = 0
    for table in tables:
        for index in table.vector_indexes:
            result = await build_index(m, table.schema, index["name"], index["definition"])
            if isinstance(result, Fail):
                return Fail(result.reason, f"{result.message} on the shadow; the application's tables are untouched")
            built += result
    message = f"{built} index(es) built concurrently on the shadow tables; the application never waited"
    set_condition(m.status, ConditionType.INDEXES_REBUILT, True, Reason.COMPLETED, message, m.generation)
    return Advance(Phase.VERIFY, message)


async def _checksum_pair(m: Migration, table: ShadowTable, left: str, right: str) -> TableVerification:
    """Rows and checksums of two relations holding one table's rows (original and copy), as seen now."""
    conn = m.session
    mode = m.facts.checksum_mode
    names = set(table.vector_columns)
    a = await table_checksum(conn, table.schema, left, names, mode)
    b = await table_checksum(conn, table.schema, right, names, mode)
    return TableVerification(
        name=table.name, rows_before=a.rows, rows_after=b.rows, checksum_before=a.checksum, checksum_after=b.checksum
    )


async def _compare(m: Migration, pairs: list[tuple[ShadowTable, str, str]]) -> list[TableVerification]:
    """Rows and checksums of each (table, relation a, relation b) in one snapshot, while writes go on."""
    async with m.session.transaction(isolation="repeatable_read", readonly=True):
        return [await _checksum_pair(m, table, a, b) for table, a, b in pairs]


def _unequal(table: TableVerification) -> bool:
    return (table.rows_before, table.checksum_before) != (table.rows_after, table.checksum_after)


async def _analyse(m: Migration, tables: list[ShadowTable], relation: str) -> list[tuple[Reason, str]]:
    """The checks a verify and every cutover step run: equal content, valid indexes, recall, latency."""
    conn = m.session
    pairs = [(t, t.table, t.shadow) if relation == "shadow" else (t, t.old, t.table) for t in tables]
    compared = await _compare(m, pairs)
    if m.facts.checksum_mode in (BINARY, TEXT) and any(_unequal(t) for t in compared):
        # The two types sent or printed some value differently: compare parsed values before
        # calling it a difference (the swap does the same).
        m.facts.checksum_mode = NORMALIZED
        compared = await _compare(m, pairs)
    verification = m.status.verification or Verification(k=m.spec.verify.k)
    verification.tables = compared
    verification.checksum_mode = m.facts.checksum_mode
    m.status.verification = verification
    problems: list[tuple[Reason, str]] = [
        (Reason.DATA_MISMATCH, f"{t.name}: {t.rows_before} rows/{t.checksum_before} in the original, "
                               f"{t.rows_after} rows/{t.checksum_after} in the copy")
        for t in compared
        if _unequal(t)
    ]  # fmt: skip
    for table in tables:
        for index in table.vector_indexes:
            name = index["name"] if relation == "shadow" else index["original"]
            state = await _index_state(conn, table.schema, name)
            if state is None or not state[0] or state[1] != index["method"]:
                problems.append(
                    (Reason.VERIFICATION_FAILED, f"index {name} is missing, INVALID or not on {index['method']}")
                )
    probes = m.facts.probes
    if relation != "shadow":
        originals = {(t.schema, i["name"]): (t.table, i["original"]) for t in tables for i in t.vector_indexes}
        probes = []
        for probe in m.facts.probes:
            table_name, index_name = originals.get(
                (probe.after.schema, probe.after.index_name), (probe.after.table, probe.index)
            )
            target = IndexTarget(**{**asdict(probe.after), "table": table_name, "index_name": index_name})
            probes.append(Probe(probe.index, probe.table_rows, target, probe.queries, probe.baseline))
    problems += await _judge_probes(m, probes, verification)
    verification.passed = not problems
    return problems


async def run_shadow_verify(m: Migration) -> Outcome:
    """Prove the shadows while the application still runs on pgvector."""
    _, tables = await _recorded(m)
    if tables is None:
        return _START_OVER
    problems = await _analyse(m, tables, "shadow")
    if problems:
        message = "; ".join(text for _, text in problems)
        set_condition(m.status, ConditionType.VERIFIED, False, problems[0][0], message, m.generation)
        return Fail(problems[0][0], f"the shadow tables failed verification: {message}")
    rows = sum(t.rows_after or 0 for t in (m.status.verification.tables if m.status.verification else []))
    message = (
        f"shadow tables equal to the originals in one snapshot ({rows} rows); indexes valid, recall and latency held"
    )
    set_condition(m.status, ConditionType.SHADOW_SYNCED, True, Reason.PASSED, message, m.generation)
    m.status.cutover = m.status.cutover or CutoverStatus()
    return Advance(Phase.CUTOVER, message)


async def run_cutover(m: Migration) -> Outcome:
    """Walk the cutover steps: publish weights, pause, and re-run the analysis before each next step."""
    _, tables = await _recorded(m)
    if tables is None:
        return _START_OVER
    cutover = m.status.cutover = m.status.cutover or CutoverStatus()
    steps = m.spec.cutover.steps
    while cutover.step < len(steps):
        current = steps[cutover.step]
        if cutover.step_started_at is None:
            cutover.step_started_at = now()
        if current.set_weight is not None:
            cutover.weight = current.set_weight
            problems = await _analyse(m, tables, "shadow")
            if problems:
                message = "; ".join(text for _, text in problems)
                set_condition(m.status, ConditionType.VERIFIED, False, Reason.ANALYSIS_FAILED, message, m.generation)
                return Fail(
                    Reason.ANALYSIS_FAILED, f"cutover step {cutover.step + 1} (weight {cutover.weight}%): {message}"
                )
        elif current.pause is not None and current.pause.duration is None:
            if not m.promote:
                return Hold(
                    Reason.AWAITING_PROMOTION,
                    f"cutover paused at step {cutover.step + 1} of {len(steps)} with {cutover.weight}% of reads on "
                    'the new tables; promote to go on (annotation ruvector.dev/promote: "true", or --promote)',
                )
            m.promote, m.promote_consumed = False, True
        elif current.pause is not None:
            remaining = duration_ms(current.pause.duration or "0") / 1000 - _age(cutover.step_started_at)
            if remaining > 0:
                return Wait(
                    Reason.CUTOVER_PAUSED,
                    f"cutover paused at step {cutover.step + 1} of {len(steps)} for {remaining:.0f}s more",
                    delay=remaining,
                )
        cutover.step += 1
        cutover.step_started_at = None
    cutover.weight = 100
    return Advance(Phase.FINALIZE, f"cutover steps done ({len(steps)}); finalizing")


async def run_finalize(m: Migration) -> Outcome:
    """Swap every shadow in under its table's name in one short transaction; keep the old tables in sync."""
    conn = m.session
    entries, tables = await _recorded(m)
    if tables is None:
        return _START_OVER
    if FINALIZED not in entries:
        progress = _Progress()
        transaction = await _begin_bounded_transaction(m)
        try:
            progress.step = "lock"
            relations = [qualify(t.schema, name) for t in tables for name in (t.table, t.shadow)]
            await conn.execute(f"LOCK TABLE {', '.join(relations)} IN ACCESS EXCLUSIVE MODE")
            progress.locked_at = time.perf_counter()
            for table in tables:
                progress.step = f"swap {table.name}"
                await _swap_names(conn, table, forward=True)
            keep = timedelta(milliseconds=duration_ms(m.spec.parallel.keep_old_for))
            parallel = m.status.parallel or ParallelStatus()
            parallel.old_tables = [f"{t.schema}.{t.old}" for t in tables]
            parallel.drop_old_after = now(later_by=keep)
            parallel.lock_window_seconds = round(progress.blocked_seconds, 4)
            m.status.parallel = parallel
            await journal.record(
                conn, m.name, FINALIZED, m.status.plan_hash or "",
                {"dropOldAfter": parallel.drop_old_after, "lockWindowSeconds": parallel.lock_window_seconds},
            )  # fmt: skip
            progress.step = "commit"
            await transaction.commit()
            parallel.lock_window_seconds = round(progress.blocked_seconds, 4)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            await _rollback(transaction)
            return _transaction_failure(error, progress, m.spec, "finalize")
        record_timing(m.status, "writeBlockedSeconds", parallel.lock_window_seconds or 0.0)
    problems = await _analyse(m, tables, "final")
    if problems:
        message = "; ".join(text for _, text in problems)
        set_condition(m.status, ConditionType.VERIFIED, False, problems[0][0], message, m.generation)
        return Fail(problems[0][0], f"after the finalize: {message}")
    parallel = m.status.parallel or ParallelStatus()
    message = (
        f"{len(tables)} table(s) now on {m.spec.target.extension}; writes waited {parallel.lock_window_seconds}s "
        f"for the swap; the old tables are kept in sync until {parallel.drop_old_after}"
    )
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, True, Reason.COMPLETED, message, m.generation)
    set_condition(m.status, ConditionType.VERIFIED, True, Reason.PASSED, message, m.generation)
    if seconds_until_old_tables_go(m.status) == 0:
        message += "; " + await drop_old_tables(m, tables)
    await record_success(m, message)
    return Advance(Phase.SUCCEEDED, message)


async def _swap_names(conn: asyncpg.Connection, table: ShadowTable, *, forward: bool) -> None:
    """Rename table ⇄ old and shadow ⇄ table with their indexes, and move the sync trigger's direction."""
    source, shadow, old = (qualify(table.schema, n) for n in (table.table, table.shadow, table.old))
    if forward:
        await _drop_sync(conn, table, source, "sync")
        originals = await _index_names(conn, source)
        await conn.execute(f"ALTER TABLE {source} RENAME TO {quote_ident(table.old)}")
        for name in originals:
            kept = derived_name(name, "_pgvector_old")
            await conn.execute(f"ALTER INDEX {qualify(table.schema, name)} RENAME TO {quote_ident(kept)}")
        await conn.execute(f"ALTER TABLE {shadow} RENAME TO {quote_ident(table.table)}")
        for shadow_index, original in table.index_renames:
            await conn.execute(f"ALTER INDEX {qualify(table.schema, shadow_index)} RENAME TO {quote_ident(original)}")
        for column, sequence in table.sequences:
            await conn.execute(f"ALTER SEQUENCE {sequence} OWNED BY {source}.{quote_ident(column)}")
        for column, sequence in table.identities:
            await conn.execute(
                "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence($1, $2), v) "
                "FROM (SELECT pg_catalog.pg_sequence_last_value($3::pg_catalog.regclass) AS v) s WHERE v IS NOT NULL",
                source, column, sequence,
            )  # fmt: skip
        await _install_sync(conn, table, "sync_back", source, old, table.backward)
    else:
        await _drop_sync(conn, table, source, "sync_back")
        renamed = dict((original, shadow_index) for shadow_index, original in table.index_renames)
        for name in await _index_names(conn, source):
            back = renamed.get(name, derived_name(name, "_vmig"))
            await conn.execute(f"ALTER INDEX {qualify(table.schema, name)} RENAME TO {quote_ident(back)}")
        await conn.execute(f"ALTER TABLE {source} RENAME TO {quote_ident(table.shadow)}")
        for name in await _index_names(conn, old):
            original = name.removesuffix("_pgvector_old")
            await conn.execute(f"ALTER INDEX {qualify(table.schema, name)} RENAME TO {quote_ident(original)}")
        await conn.execute(f"ALTER TABLE {old} RENAME TO {quote_ident(table.table)}")
        for column, sequence in table.sequences:
            await conn.execute(f"ALTER SEQUENCE {sequence} OWNED BY {source}.{quote_ident(column)}")


async def _index_names(conn: asyncpg.Connection, relation: str) -> list[str]:
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = $1::pg_catalog.regclass ORDER BY c.oid
        """,
        relation,
    )
    return [row["relname"] for row in rows]


def seconds_until_old_tables_go(status: VectorMigrationStatus) -> float | None:
    """For a succeeded Parallel migration still keeping its old tables: seconds until they may go."""
    parallel = status.parallel
    if parallel is None or parallel.old_tables_dropped or parallel.drop_old_after is None:
        return None
    return max(0.0, -seconds_since(parallel.drop_old_after))


async def drop_old_tables(m: Migration, tables: list[ShadowTable] | None = None) -> str:
    """After keepOldFor: drop the reverse triggers, the old tables (RESTRICT), then the source extension."""
    conn = m.session
    if tables is None:
        entries = await journal.read(conn, m.name)
        if PREPARED not in entries or OLD_DROPPED in entries:
            return "the old tables are already gone"
        tables = _tables(entries[PREPARED])
    async with conn.transaction():
        for table in tables:
            await _drop_sync(conn, table, qualify(table.schema, table.table), "sync_back")
            await conn.execute(f"DROP TABLE IF EXISTS {qualify(table.schema, table.old)} RESTRICT")
        await journal.record(conn, m.name, OLD_DROPPED, m.status.plan_hash or "", {})
    parallel = m.status.parallel or ParallelStatus()
    parallel.old_tables_dropped = True
    m.status.parallel = parallel
    source = m.spec.source.extension
    left = await _drop_unused_extension(m, source)
    if await read_extension(conn, source) is None:
        set_condition(
            m.status, ConditionType.EXTENSION_SWAPPED, True, Reason.COMPLETED, f"{source} dropped", m.generation
        )
    return f"old tables dropped{left}"


async def run_parallel_rollback(m: Migration) -> Outcome:
    """Before the finalize: drop the shadows. After it: swap back (the old tables are in sync), then drop them."""
    conn = m.session
    entries, tables = await _recorded(m)
    if tables is None:
        return Fail(Reason.NOTHING_TO_ROLL_BACK, "nothing to roll back: no shadow tables are recorded")
    if OLD_DROPPED in entries:
        return Fail(
            Reason.ROLLBACK_FAILED,
            "the old pgvector tables were dropped after keepOldFor; only the backup can bring them back",
        )
    finalized = FINALIZED in entries
    compared: list[TableVerification] = []
    progress = _Progress()
    transaction = await _begin_bounded_transaction(m)
    try:
        if finalized:
            progress.step = "lock"
            relations = [qualify(t.schema, name) for t in tables for name in (t.table, t.old)]
            await conn.execute(f"LOCK TABLE {', '.join(relations)} IN ACCESS EXCLUSIVE MODE")
            progress.locked_at = time.perf_counter()
            for table in tables:
                compared.append(await _equal_under_lock(m, table))
                await _swap_names(conn, table, forward=False)
        for table in tables:
            progress.step = f"drop shadow of {table.name}"
            await _drop_sync(conn, table, qualify(table.schema, table.table), "sync")
            await conn.execute(f"DROP TABLE IF EXISTS {qualify(table.schema, table.shadow)} RESTRICT")
        await conn.execute(
            f"DELETE FROM {journal.JOURNAL} WHERE migration = $1 AND event <> $2", m.name, journal.ROLLED_BACK
        )
        await journal.record(conn, m.name, journal.ROLLED_BACK, m.status.plan_hash or "", {"finalized": finalized})
        await transaction.commit()
    except _Unequal as error:
        await _rollback(transaction)
        return Fail(Reason.ROLLBACK_FAILED, f"the old table is not in sync ({error}); nothing changed")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        await _rollback(transaction)
        return _transaction_failure(error, progress, m.spec, "rollback")
    created = entries[PREPARED].detail.get("createdExtension", False)
    left = await _drop_unused_extension(m, m.spec.target.extension) if created else ""
    if finalized:
        record_timing(m.status, "rollbackWriteBlockedSeconds", progress.blocked_seconds)
        verification = m.status.verification or Verification(k=m.spec.verify.k)
        verification.tables = compared
        m.status.verification = verification
        message = (
            f"swapped back to the pgvector tables (kept in sync since the finalize, checksums equal to the "
            f"migrated tables: no write lost); shadows dropped{left}"
        )
    else:
        message = f"the shadow tables and their triggers are dropped; the application's tables were never touched{left}"
    m.status.cutover = None
    set_condition(m.status, ConditionType.ROLLED_BACK, True, Reason.COMPLETED, message, m.generation)
    set_condition(m.status, ConditionType.EXTENSION_SWAPPED, False, Reason.ROLLED_BACK, message, m.generation)
    return Advance(Phase.ROLLED_BACK, message)


class _Unequal(RuntimeError):
    pass


async def _equal_under_lock(m: Migration, table: ShadowTable) -> TableVerification:
    pair = await _checksum_pair(m, table, table.table, table.old)
    if _unequal(pair) and m.facts.checksum_mode in (BINARY, TEXT):
        m.facts.checksum_mode = NORMALIZED  # a difference of form is not a difference of value
        pair = await _checksum_pair(m, table, table.table, table.old)
    if _unequal(pair):
        new, old = f"{pair.rows_before} rows/{pair.checksum_before}", f"{pair.rows_after} rows/{pair.checksum_after}"
        raise _Unequal(f"{table.name}: {new} vs {old}")
    return pair


# ------------------------------------------------------------------------------------- helpers


def _age(stamp: str | None) -> float:
    return 0.0 if stamp is None else seconds_since(stamp)


PARALLEL_PHASES: dict[Phase, PhaseFunction] = {
    Phase.PENDING: run_checklist,
    Phase.CHECKLIST: run_checklist,
    Phase.BACKUP: run_backup_phase,
    Phase.AWAITING_APPROVAL: run_awaiting_approval,
    Phase.SWAP: run_prepare,
    Phase.BACKFILL: run_backfill,
    Phase.REINDEX: run_shadow_reindex,
    Phase.VERIFY: run_shadow_verify,
    Phase.CUTOVER: run_cutover,
    Phase.FINALIZE: run_finalize,
    Phase.ROLLING_BACK: run_parallel_rollback,
}
