"""Parallel's plan as data: every statement of the shadows, the sync triggers, the backfill and the finalize.

Derived purely from facts (the conversion's column and index mappings, each table's catalog facts),
so the same database gives the same statements and the same hash. The phases run exactly these
statements: the prepare transaction, each table's backfill batch, the builds after it, the
finalize transaction, and what goes after ``parallel.keepOldFor``. A person approving the hash
approves them; the prepare transaction derives them again and refuses to go on when they differ.
"""

# size: every statement of the strategy, by the phase that runs it, read in one place as the person approving does
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ...database.ddl import UnknownPrivilege, column_grant_statements, grant_statements
from ...database.sql import qualify, quote_ident, quote_literal
from ...database.surface import TargetSurface, concurrent_build_bug
from ...engine.plan import ColumnConversion, MigrationPlan, PlanningError, Rewritten, Statement
from ...engine.views import drop_views, recreate_view
from ...vocabulary import Reason, StatementKind
from .dependents import (
    move_materialized_view,
    move_triggers,
    repoint_keys,
    validate_keys,
    view_queries,
    views_over,
)
from .extras import at_finalize, identity_sequences_renamed, on_shadow
from .facts import TableFacts
from .names import INDEX_SUFFIX, OLD_SUFFIX, OURS, SHADOW_SUFFIX, derived_name
from .recorded import (
    ColumnSequence,
    ForeignKeyTo,
    Grant,
    IdentitySequence,
    IndexRename,
    KeyColumn,
    ShadowIndex,
    ShadowTable,
    TableRewrites,
    TriggerCopy,
)
from .sync import drop_sync, install_sync


@dataclass(frozen=True)
class TablePlan:
    """One table's statements, by the phase that runs them."""

    shadow: ShadowTable
    create: tuple[Statement, ...]  # in the prepare transaction: the shadow, its indexes, grants, sync trigger
    backfill: Statement  # one keyset batch: $1 the last key copied (text[]), $2 the batch size
    after_backfill: tuple[Statement, ...]  # foreign keys validated, vector indexes built concurrently
    finalize: tuple[Statement, ...]  # in the finalize transaction: the names swapped, the sync reversed
    drop_old: tuple[Statement, ...]  # after parallel.keepOldFor


@dataclass(frozen=True)
class ParallelPlan:
    """Everything a Parallel migration runs, in order, hashed."""

    conversion: MigrationPlan
    setup: tuple[Statement, ...]  # the target's schema and extension, then the originals locked
    tables: tuple[TablePlan, ...]
    drop_source: Statement
    warnings: tuple[str, ...]
    # Views over the tables: dropped (deepest first) and created again once the tables have their
    # names, so that they read the migrated tables; empty when there are none (the hash is unchanged)
    view_drops: tuple[Statement, ...] = ()
    view_creates: tuple[Statement, ...] = ()
    # The same views as they were, for a rollback after the finalize, when a query had to be
    # rewritten for the target (it names the source's types or functions); else view_creates serve
    view_creates_back: tuple[Statement, ...] = ()
    # Materialized views over the tables: made again over the migrated tables after keepOldFor,
    # before the old tables go (dependents.move_materialized_view); empty when there are none
    materialized_moves: tuple[Statement, ...] = ()

    @property
    def prepare(self) -> tuple[Statement, ...]:
        """The prepare transaction, in order."""
        return self.setup + tuple(s for t in self.tables for s in t.create)

    @property
    def finalize(self) -> tuple[Statement, ...]:
        """The finalize transaction, in order."""
        functions = self.conversion.functions
        after = after_renames(
            self.view_drops, (*functions.drops, *functions.forward), self.view_creates, functions.validate
        )
        return tuple(finalize_transaction([t.shadow for t in self.tables], after))

    @property
    def cleanup(self) -> tuple[Statement, ...]:
        """What goes after parallel.keepOldFor, in order."""
        return (*self.materialized_moves, *(s for t in self.tables for s in t.drop_old), self.drop_source)

    def _stages(self) -> dict[str, list[Statement]]:
        after_finalize = validate_keys([t.shadow for t in self.tables])
        return {
            "prepareTransaction": list(self.prepare),
            "backfill": [t.backfill for t in self.tables],
            "afterBackfill": [s for t in self.tables for s in t.after_backfill],
            "finalizeTransaction": list(self.finalize),
            # only when there is something to validate: the hash of other plans stays what it was
            **({"afterFinalize": after_finalize} if after_finalize else {}),
            "afterKeepOldFor": list(self.cleanup),
        }

    @property
    def plan_hash(self) -> str:
        """A digest of every statement of every stage, and of the target they were made for."""
        document = {
            "strategy": "Parallel",
            "surface": self.conversion.surface,
            **{stage: [s.hashed() for s in statements] for stage, statements in self._stages().items()},
        }
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        return f"sha256:{digest[:16]}"

    def as_document(self) -> dict[str, object]:
        """The plan as data, for `vector-migration plan` and the approval ConfigMap."""
        return {
            "planHash": self.plan_hash,
            "strategy": "Parallel",
            "target": self.conversion.surface,
            **{
                stage: [
                    {"step": s.step.value, "sql": s.sql, **({"runAs": s.run_as} if s.run_as else {})}
                    for s in statements
                ]
                for stage, statements in self._stages().items()
            },
            "warnings": list(self.warnings),
        }


def build_parallel_plan(
    conversion: MigrationPlan,
    surface: TargetSurface,
    tables: list[TableFacts],
    migration: str,
    source_extension: str,
) -> ParallelPlan:
    """Derive every statement of a Parallel migration from the conversion and the tables' facts."""
    warnings = list(conversion.warnings)
    setup = []
    originals = [qualify(t.schema, t.table) for t in tables]
    if originals:
        # CREATE TRIGGER takes this lock anyway; taken first, the plan is derived again under it.
        setup.append(Statement(StatementKind.LOCK, f"LOCK TABLE {', '.join(originals)} IN SHARE ROW EXCLUSIVE MODE"))
    setup += [
        s for s in conversion.swap if s.step in (StatementKind.TARGET_SCHEMA, StatementKind.CREATE_TARGET_EXTENSION)
    ]
    planned = [_table_plan(conversion, surface, facts, migration, warnings) for facts in tables]
    views = views_over(tables)
    queries = view_queries(conversion.rewritten)
    plain = [view for view in views if not view.materialized]
    materialized = [view for view in views if view.materialized]
    return ParallelPlan(
        conversion=conversion,
        setup=tuple(setup),
        tables=tuple(planned),
        drop_source=Statement(
            StatementKind.DROP_SOURCE_EXTENSION, f"DROP EXTENSION {quote_ident(source_extension)} RESTRICT"
        ),
        warnings=tuple(warnings),
        view_drops=tuple(drop_views(plain)),
        view_creates=tuple(
            statement
            for view in plain
            for statement in recreate_view(view, query=queries.get((view.schema, view.name)))
        ),
        view_creates_back=tuple(statement for view in plain for statement in recreate_view(view))
        if any((view.schema, view.name) in queries for view in plain)
        else (),
        materialized_moves=tuple(
            statement for view in materialized for statement in move_materialized_view(view, conversion.rewritten)
        ),
    )


def cast(conversion: ColumnConversion) -> str:
    """SQL turning ``{value}`` of the source type into the target type, by the plan's cast path."""
    via = {"direct": "", "real[]": "::pg_catalog.float4[]", "text": "::pg_catalog.text"}[conversion.cast_path]
    return "{value}" + via + "::" + conversion.target_type_sql


# size: one table's record (ShadowTable) filled field by field, then its statements by phase
def _table_plan(
    conversion: MigrationPlan, surface: TargetSurface, facts: TableFacts, migration: str, warnings: list[str]
) -> TablePlan:
    schema, table = facts.schema, facts.table
    conversions = [c for c in conversion.conversions if (c.column.schema, c.column.table) == (schema, table)]
    shadow_name = derived_name(table, SHADOW_SUFFIX)
    rewritten = _rewritten_for(conversion.rewritten, schema, table)
    # An index the conversion rewrote or dropped (an expression, pgvector's class on bit) is never copied as it is.
    renames = [
        IndexRename(shadow=derived_name(i.constraint or i.name, INDEX_SUFFIX), original=i.name)
        for i in facts.indexes
        if not i.on_vector and i.name not in rewritten.index_names
    ]
    renames += [
        IndexRename(shadow=derived_name(name, INDEX_SUFFIX), original=name) for _, _, name, _ in rewritten.indexes
    ]
    vector_indexes = []
    for rebuild in conversion.rebuilds:
        if (rebuild.saved.table_schema, rebuild.saved.table) != (schema, table):
            continue
        # A target whose concurrent build is known to be broken gets its index on the empty shadow:
        # the backfill then fills it row by row, and no build ever locks the shadow.
        bug = concurrent_build_bug(surface, rebuild.method)
        if bug:
            warnings.append(
                f"index {rebuild.saved.name} is built on the empty shadow and filled by the backfill: {bug}"
            )
        name = derived_name(rebuild.saved.name, INDEX_SUFFIX)
        definition = rebuild.definition_on(schema, shadow_name, name, concurrently=bug is None)
        vector_indexes.append(
            ShadowIndex(name=name, original=rebuild.saved.name, definition=definition, method=rebuild.method)
        )
        renames.append(IndexRename(shadow=name, original=rebuild.saved.name))
    shadow = ShadowTable(
        table_schema=schema,
        table=table,
        shadow=shadow_name,
        old=derived_name(table, OLD_SUFFIX),
        key=[KeyColumn(column=column, type=kind) for column, kind in facts.key],
        columns=list(facts.columns),
        forward={c.column.column: cast(c) for c in conversions},
        backward={
            c.column.column: "{value}::pg_catalog.text::"
            + qualify(c.column.type_schema, c.column.type_name)
            + (f"({c.column.dims})" if c.column.dims else "")
            for c in conversions
        },
        vector_columns=[c.column.column for c in conversions],
        index_renames=renames,
        vector_indexes=vector_indexes,
        foreign_keys=[name for name, _ in facts.foreign_keys],
        sequences=[ColumnSequence(column=column, sequence=sequence) for column, sequence in facts.sequences],
        identities=[ColumnSequence(column=column, sequence=sequence) for column, sequence in facts.identities],
        original_indexes=[i.name for i in facts.indexes],
        owner=facts.owner,
        comment=facts.comment,
        comment_kept=True,
        referencing_keys=[
            ForeignKeyTo(table_schema=s, table=t, name=n, definition=d) for s, t, n, d in facts.referencing
        ],
        row_security=facts.row_security,
        triggers=[TriggerCopy(name=name, definition=definition, enabled=on) for name, definition, on in facts.triggers],
        identity_sequences=[
            IdentitySequence(
                column=column,
                sequence=sequence,
                name=name,
                grants=[Grant(grantee=g, privilege=p, grantable=o) for g, p, o in grants],
            )
            for column, sequence, name, grants in facts.identity_sequences
        ],
        extras=facts.extras,
        rewrites=TableRewrites(
            defaults=[column for _, _, column, _ in rewritten.defaults],
            checks=[name for _, _, name, _ in rewritten.checks],
            indexes=[name for _, _, name, _ in rewritten.indexes],
            dropped=[name for _, _, name, _ in rewritten.dropped],
        ),
    )
    return TablePlan(
        shadow=shadow,
        create=tuple(_create_shadow(shadow, facts, conversions, migration, rewritten)),
        backfill=Statement(StatementKind.BACKFILL_BATCH, batch_sql(shadow), run_as=facts.owner),
        after_backfill=tuple(after_backfill(shadow)),
        finalize=tuple(finalize_statements(shadow)),
        drop_old=tuple(drop_old_statements(shadow)),
    )


def _rewritten_for(rewritten: Rewritten, schema: str, table: str) -> Rewritten:
    """The rewritten objects of one table."""
    return Rewritten(
        defaults=tuple(d for d in rewritten.defaults if d[:2] == (schema, table)),
        checks=tuple(c for c in rewritten.checks if c[:2] == (schema, table)),
        indexes=tuple(i for i in rewritten.indexes if i[:2] == (schema, table)),
        dropped=tuple(i for i in rewritten.dropped if i[:2] == (schema, table)),
    )


# size: the shadow's DDL in the order it must run (LIKE, what names pgvector out, types, back in, indexes, grants)
def _create_shadow(
    shadow: ShadowTable, facts: TableFacts, conversions: list[ColumnConversion], migration: str, rewritten: Rewritten
) -> list[Statement]:
    """The shadow, empty, with the target's types, the original's other indexes, constraints and grants.

    ``LIKE … INCLUDING ALL`` copies defaults and CHECK constraints as they are; those naming pgvector
    (``'[0,0,1]'::vector(3)``, ``vector_dims(embedding) = 3``) are dropped before the column types
    change and made again from their rewritten definitions.
    """
    schema = shadow.table_schema
    source, target = qualify(schema, shadow.table), qualify(schema, shadow.shadow)
    note = f"{OURS} {migration}: shadow of {schema}.{shadow.table} (Parallel strategy); dropped when it is done"
    sql = [
        # Extended statistics are made under names of the engine's (extras.on_shadow), so the finalize can name them
        f"CREATE TABLE {target} (LIKE {source} INCLUDING ALL EXCLUDING INDEXES EXCLUDING STATISTICS)",
        f"COMMENT ON TABLE {target} IS {quote_literal(note)}",
    ]
    sql += [f"ALTER TABLE {target} ALTER COLUMN {quote_ident(column)} DROP DEFAULT"
            for _, _, column, _ in rewritten.defaults]  # fmt: skip
    sql += [f"ALTER TABLE {target} DROP CONSTRAINT {quote_ident(name)}" for _, _, name, _ in rewritten.checks]
    if conversions:
        sql.append(
            f"ALTER TABLE {target} "
            + ", ".join(
                f"ALTER COLUMN {quote_ident(c.column.column)} TYPE {c.target_type_sql} "
                f"USING {cast(c).format(value=quote_ident(c.column.column))}"
                for c in conversions
            )
        )
    sql += [f"ALTER TABLE {target} ALTER COLUMN {quote_ident(column)} SET DEFAULT {expression}"
            for _, _, column, expression in rewritten.defaults]  # fmt: skip
    sql += [f"ALTER TABLE {target} ADD CONSTRAINT {quote_ident(name)} {definition}"
            for _, _, name, definition in rewritten.checks]  # fmt: skip
    sql += [index_on(definition, schema, shadow.shadow, derived_name(name, INDEX_SUFFIX))
            for _, _, name, definition in rewritten.indexes]  # fmt: skip
    made = {name: derived_name(name, INDEX_SUFFIX) for _, _, name, _ in rewritten.indexes}  # original -> shadow's
    constraints = {name: name for name, _ in facts.foreign_keys}
    for index in facts.indexes:
        if index.on_vector or index.name in rewritten.index_names:
            continue  # rebuilt on the target's methods below, rewritten above, or dropped by request
        name = derived_name(index.constraint or index.name, INDEX_SUFFIX)
        made[index.name] = name
        if index.constraint is not None and index.constraint_definition is not None:
            sql.append(f"ALTER TABLE {target} ADD CONSTRAINT {quote_ident(name)} {index.constraint_definition}")
            constraints[index.constraint] = name
        else:
            sql.append(index_on(index.definition, schema, shadow.shadow, name))
    sql += [f"ALTER TABLE {target} ADD CONSTRAINT {quote_ident(name)} {definition} NOT VALID"
            for name, definition in facts.foreign_keys]  # fmt: skip
    try:
        sql += grant_statements(target, facts.grants)
        sql += column_grant_statements(target, facts.column_grants)
    except UnknownPrivilege as error:
        raise PlanningError(
            Reason.BLOCKING_DEPENDENT, f"table {shadow.name} has an unknown privilege {str(error)!r}"
        ) from None
    sql.append(f"ALTER TABLE {target} OWNER TO {quote_ident(facts.owner)}")
    sql += _row_security(facts, target)
    sql += on_shadow(shadow, made, constraints)
    statements = [Statement(StatementKind.CREATE_SHADOW, text) for text in sql]
    statements += [
        Statement(StatementKind.BUILD_INDEX, index.definition)
        for index in shadow.vector_indexes
        if " CONCURRENTLY " not in index.definition
    ]
    statements += [Statement(StatementKind.SYNC_TRIGGER, text) for text in install_sync(shadow, forward=True)]
    return statements


def _row_security(facts: TableFacts, target: str) -> list[str]:
    """The original's row-level security on the shadow from the start: its grantees read it too."""
    if not facts.row_security:
        return []
    sql = [f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY"]
    for name, kind, command, roles, using, check in facts.policies:
        grantees = ", ".join("PUBLIC" if role == "PUBLIC" else quote_ident(role) for role in roles)
        sql.append(
            f"CREATE POLICY {quote_ident(name)} ON {target} AS {kind} FOR {command} TO {grantees}"
            + (f" USING ({using})" if using is not None else "")
            + (f" WITH CHECK ({check})" if check is not None else "")
        )
    return sql


def index_on(definition: str, schema: str, table: str, name: str) -> str:
    """An index definition (pg_get_indexdef's) moved to another table under another name, by parsing it."""
    # Imported here, not at the top: the parser costs the operator ~4 MB of resident memory (bench/:
    # idle RSS), paid only when a Parallel plan moves an index.
    from pglast import ast, parse_sql
    from pglast.stream import RawStream

    statement = parse_sql(definition)[0].stmt
    if not isinstance(statement, ast.IndexStmt):
        raise PlanningError(Reason.BLOCKING_DEPENDENT, f"cannot read the index definition {definition!r}")
    statement.idxname = name
    statement.relation = ast.RangeVar(schemaname=schema, relname=table, inh=True, relpersistence="p")
    return str(RawStream()(statement))


def batch_sql(table: ShadowTable) -> str:
    """One keyset batch: lock the next rows (FOR SHARE), copy them converted, return the last key.

    FOR SHARE makes a concurrent DELETE or UPDATE of a row in the batch wait for the batch (then its
    trigger applies it to the shadow), and a batch that meets a row already changed reads its newest
    version; ON CONFLICT DO NOTHING keeps what the trigger already wrote, which is never older.
    """
    source = qualify(table.table_schema, table.table)
    shadow = qualify(table.table_schema, table.shadow)
    key = [quote_ident(k.column) for k in table.key]
    after = ", ".join(f"($1::pg_catalog.text[])[{n}]::{k.type}" for n, k in enumerate(table.key, start=1))
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


def after_backfill(table: ShadowTable) -> list[Statement]:
    """Foreign keys validated (NOT VALID while the rows arrived), then the vector indexes built concurrently."""
    shadow = qualify(table.table_schema, table.shadow)
    statements = [
        Statement(StatementKind.VALIDATE_FOREIGN_KEY, f"ALTER TABLE {shadow} VALIDATE CONSTRAINT {quote_ident(name)}")
        for name in table.foreign_keys
    ]
    statements += [
        Statement(StatementKind.REINDEX_CONCURRENTLY, index.definition)
        for index in table.vector_indexes
        if " CONCURRENTLY " in index.definition
    ]
    return statements


_Step = TypeVar("_Step")


def after_renames(
    view_drops: Sequence[_Step], functions: Sequence[_Step], view_creates: Sequence[_Step], validated: Sequence[_Step]
) -> list[_Step]:
    """What the finalize runs once the tables have their names, in the one order the plan and the run share.

    Views go first (they may call a carried function), the functions are made for the target, the
    views come back over the migrated tables, and only then are the functions' bodies checked.
    """
    return [*view_drops, *functions, *view_creates, *validated]


def finalize_transaction(tables: list[ShadowTable], functions: Sequence[Statement] = ()) -> list[Statement]:
    """The finalize stage: every table and its shadow locked, each table's renames, then the functions.

    A function naming the source's types is dropped and created for the target once the tables have
    their names (a body bound at creation, BEGIN ATOMIC, then reads the migrated table).
    """
    both = [qualify(t.table_schema, name) for t in tables for name in (t.table, t.shadow)]
    lock = Statement(StatementKind.LOCK, f"LOCK TABLE {', '.join(both)} IN ACCESS EXCLUSIVE MODE")
    return [lock, *(s for t in tables for s in finalize_statements(t)), *functions]


def finalize_statements(table: ShadowTable) -> list[Statement]:
    """Under the finalize's lock: the original becomes the old table, the shadow takes its name, the sync reverses."""
    schema = table.table_schema
    source, shadow = qualify(schema, table.table), qualify(schema, table.shadow)
    sql = list(drop_sync(table, forward=True))
    sql += [
        f"ALTER INDEX {qualify(schema, name)} RENAME TO {quote_ident(derived_name(name, OLD_SUFFIX))}"
        for name in table.original_indexes or []
    ]
    sql.append(f"ALTER TABLE {source} RENAME TO {quote_ident(table.old)}")
    sql.append(f"ALTER TABLE {shadow} RENAME TO {quote_ident(table.table)}")
    if table.comment_kept:  # the shadow's marker goes; the table's own comment (or none) is back
        comment = "NULL" if table.comment is None else quote_literal(table.comment)
        sql.append(f"COMMENT ON TABLE {source} IS {comment}")
    sql += [
        f"ALTER INDEX {qualify(schema, rename.shadow)} RENAME TO {quote_ident(rename.original)}"
        for rename in table.index_renames
    ]
    sql += [f"ALTER SEQUENCE {s.sequence} OWNED BY {source}.{quote_ident(s.column)}" for s in table.sequences]
    sql += [
        "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence("
        f"{quote_literal(source)}, {quote_literal(i.column)}), v) FROM (SELECT pg_catalog.pg_sequence_last_value("
        f"{quote_literal(i.sequence)}::pg_catalog.regclass) AS v) s WHERE v IS NOT NULL"
        for i in table.identities
    ]
    sql += identity_sequences_renamed(table)
    sql += move_triggers(table)
    sql += at_finalize(table)
    statements = [Statement(StatementKind.SWAP_NAMES, text) for text in sql]
    statements += repoint_keys(table)
    statements += [Statement(StatementKind.SYNC_TRIGGER, text) for text in install_sync(table, forward=False)]
    return statements


def drop_old_statements(table: ShadowTable) -> list[Statement]:
    """After keepOldFor: the reverse sync goes, then the old table (RESTRICT: nothing else may use it)."""
    sql = [*drop_sync(table, forward=False), f"DROP TABLE IF EXISTS {qualify(table.table_schema, table.old)} RESTRICT"]
    return [Statement(StatementKind.DROP_OLD_TABLE, text) for text in sql]
