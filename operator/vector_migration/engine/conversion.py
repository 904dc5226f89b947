"""The one-transaction conversion: the ordered SQL of the swap and the reindex, derived purely from facts.

``build_plan`` takes what the checklist read (the source inventory), what the target exposes
(its discovered surface) and the spec, and returns every statement the swap will issue, in
order. It touches no database, so the same facts always give the same plan and the same
``plan_hash``; the swap re-derives the plan from the surface it really meets and refuses to
proceed when the hash differs from the one approved. InPlace runs it; Rebuild runs it with its
tables emptied and refilled through COPY; a rollback runs it backwards.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..api import VectorMigrationSpec
from ..database.catalog import (
    KNOWN_INDEX_PARAMETERS,
    SavedIndex,
    SavedSetting,
    SourceInventory,
    VectorColumn,
)
from ..database.ddl import create_extension_sql, set_storage_sql
from ..database.sql import qualify, quote_ident, quote_literal
from ..database.surface import (
    SETTING_CANDIDATES,
    MappingError,
    TargetSurface,
    concurrent_build_bug,
    holds_exactly,
    map_index,
    map_type,
    method_kind,
    target_function_for,
    target_type_for,
)
from ..database.target_checks import FINDINGS
from ..database.target_objects import TargetType
from ..vocabulary import Reason, ReindexMode, StatementKind
from .carry import carry_functions, code_using_operators_otherwise, plan_carried, target_predicate
from .plan import (
    IN_A_TREE,
    ColumnConversion,
    ColumnKey,
    IndexRebuild,
    MigrationPlan,
    PlanningError,
    SettingCarry,
    Statement,
    attach_indexes,
    column_key,
    index_comment,
    parents_first,
)
from .views import drop_views, recreate_view

FLOAT4_ARRAY = "_float4"  # pg_type.typname of real[]


# size: the swap's statement order read top to bottom; split, the order would be hidden
def build_plan(
    inventory: SourceInventory,
    surface: TargetSurface,
    spec: VectorMigrationSpec,
    *,
    target_schema: str,
    target_installed: bool,
    refill: str | None = None,
    column_types: Mapping[ColumnKey, str] | None = None,
) -> MigrationPlan:
    """Derive the ordered swap statements and index rebuilds from the facts.

    With ``refill`` (a COPY format: Rebuild) the tables are exported and emptied right after the
    lock, converted while empty, and imported before the index builds, so their storage is
    written afresh; without it the columns are converted where they are. ``column_types`` names
    the target type of some columns (a rollback: the types they had); by default the spec's
    ``columnTypes``, checked against the columns found.
    """
    warnings: list[str] = []
    requested = checked_column_types(inventory, spec) if column_types is None else column_types
    # Every column and index is mapped before anything is refused, so one run names every problem.
    unmapped: list[MappingError] = []
    converted = []
    for column in inventory.columns:
        try:
            converted.append(_conversion(inventory, surface, column, requested.get(column_key(column))))
        except MappingError as error:
            unmapped.append(error)
    conversions = tuple(converted)
    types_by_column = {column_key(c.column): c.target_type for c in conversions}
    type_map = _type_map(inventory, surface)  # for the functions, defaults and expressions naming the source's types
    rebuilt = []
    for index in inventory.indexes:
        if index.column_key not in types_by_column:
            continue  # its column is refused above
        try:
            rebuilt.append(_rebuild(inventory, surface, index, types_by_column, type_map, spec, warnings))
        except MappingError as error:
            unmapped.append(error)
    carried = plan_carried(inventory, surface, spec, type_map, unmapped)
    unmapped += code_using_operators_otherwise(inventory, surface)
    functions = carry_functions(inventory, surface, type_map)
    carried_definitions = frozenset(index.definition for index in inventory.carried_indexes)
    defaults = _rewritten_defaults(inventory, type_map)
    if unmapped:
        raise PlanningError(unmapped[0].reason, "; ".join(str(error) for error in unmapped))
    warnings += carried.warnings
    warnings += [
        f"{operator} computes otherwise in {surface.extension} ({how}): application queries that order by it "
        f"or read its value answer otherwise after the migration ({FINDINGS})"
        for operator, how in surface.operators_otherwise
    ]
    warnings += functions_an_application_may_miss(inventory, surface)
    rebuilds = tuple(parents_first(rebuilt))
    settings = tuple(_carry_setting(inventory, surface, setting, warnings) for setting in inventory.settings)
    if surface.shares_source_library:
        warnings.append(
            f"target {surface.extension} runs the source extension's own C library: it is a stand-in, not RuVector"
        )
    route = "intermediate" if surface.collides else "direct"
    tables = inventory.tables()
    lock = Statement(
        StatementKind.LOCK,
        "LOCK TABLE " + ", ".join(qualify(s, t) for s, t in tables) + " IN ACCESS EXCLUSIVE MODE",
    )
    create_target = _create_extension(spec, surface, target_schema)
    drop_source = Statement(
        StatementKind.DROP_SOURCE_EXTENSION, f"DROP EXTENSION {quote_ident(inventory.source.name)} RESTRICT"
    )
    # Emptying a table another table references needs that key gone for the moment: it is added
    # back, and so checked against every row, once the rows are back (in the same transaction).
    unlink = [
        Statement(
            StatementKind.DROP_DEPENDENT,
            f"ALTER TABLE {qualify(k.schema, k.table)} DROP CONSTRAINT {quote_ident(k.name)}",
        )
        for k in inventory.referencing_keys
    ]
    relink = [
        Statement(
            StatementKind.RECREATE_DEPENDENT,
            f"ALTER TABLE {qualify(k.schema, k.table)} ADD CONSTRAINT {quote_ident(k.name)} {k.definition}",
        )
        for k in inventory.referencing_keys
    ]
    # Only Rebuild empties tables (a partitioned one's leaves): InPlace converts rows in place, a key to them stays.
    stored = inventory.stored_tables()
    empty_tables = (
        unlink
        + [
            statement
            for s, t in stored
            for statement in (
                Statement(StatementKind.EXPORT, f"COPY {qualify(s, t)} TO STDOUT (FORMAT {refill})", (s, t)),
                Statement(
                    StatementKind.EMPTY_TABLE, f"TRUNCATE ONLY {qualify(s, t)}", run_as=inventory.owners.get((s, t))
                ),
            )
        ]
        if refill
        else []
    )
    statements: list[Statement] = []
    if target_schema != inventory.source.schema:
        statements.append(
            Statement(StatementKind.TARGET_SCHEMA, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(target_schema)}")
        )
    if route == "direct":
        if not target_installed:
            statements.append(create_target)
        if tables:
            statements.append(lock)
        statements += _drop_dependents(inventory, functions.drops) + carried.drops
        statements += empty_tables
        statements += [
            _alter_columns(conversions, s, t, stage="direct", owner=inventory.owners.get((s, t))) for s, t in tables
        ]
        statements += _storage_kept(conversions)
        statements.append(drop_source)
    else:
        if tables:
            statements.append(lock)
        statements += _drop_dependents(inventory, functions.drops) + carried.drops
        statements += empty_tables
        statements += [
            _alter_columns(conversions, s, t, stage="to-intermediate", owner=inventory.owners.get((s, t)))
            for s, t in tables
        ]
        statements.append(drop_source)
        statements.append(create_target)
        statements += [
            _alter_columns(conversions, s, t, stage="from-intermediate", owner=inventory.owners.get((s, t)))
            for s, t in tables
        ]
        statements += _storage_kept(conversions)
    views = (
        list(functions.forward)
        + _set_defaults(defaults)
        + carried.check_statements
        + [
            statement
            for view in inventory.views
            for statement in recreate_view(
                view, carried_definitions, carried.view_queries.get((view.schema, view.name))
            )
        ]
    )
    settings_carried = [Statement(StatementKind.CARRY_SETTING, c.statement) for c in settings if c.statement]
    if refill:
        # The rows come back before the views do: a materialized view created WITH DATA over an
        # emptied table would be empty (and so would every later read of it, until a refresh).
        statements += settings_carried
        statements += [
            Statement(
                StatementKind.IMPORT,
                f"COPY {qualify(s, t)} FROM STDIN (FORMAT {refill})",
                (s, t),
                run_as=inventory.owners.get((s, t)),
            )
            for s, t in stored
        ]
        # A deferred foreign key (Django declares every one DEFERRABLE INITIALLY DEFERRED) queues a
        # check per imported row, and PostgreSQL builds no index on a table with checks pending: run them now.
        statements.append(Statement(StatementKind.IMPORT_CHECKED, "SET CONSTRAINTS ALL IMMEDIATE"))
        statements += relink
        statements += views
    else:
        statements += views + settings_carried
    statements += functions.validate
    for rebuild in rebuilds:
        if not rebuild.concurrent:
            statements.append(Statement(StatementKind.BUILD_INDEX, rebuild.definition))
            statements += index_comment(rebuild.saved.schema, rebuild.saved.name, rebuild.saved.comment)
    statements += attach_indexes(r.saved for r in rebuilds)
    carried_in_swap, carried_after = carried.builds(spec.reindex.mode is ReindexMode.CONCURRENT, surface)
    statements += carried_in_swap
    return MigrationPlan(
        route=route,
        swap=tuple(statements),
        conversions=conversions,
        rebuilds=rebuilds,
        settings=settings,
        surface=surface.summary(),
        warnings=tuple(warnings),
        functions=functions,
        rewritten=carried.rewritten(defaults),
        carried_concurrent=tuple(carried_after),
    )


def _create_extension(spec: VectorMigrationSpec, surface: TargetSurface, schema: str) -> Statement:
    return Statement(
        StatementKind.CREATE_TARGET_EXTENSION, create_extension_sql(surface.extension, spec.target.version, schema)
    )


def checked_column_types(inventory: SourceInventory, spec: VectorMigrationSpec) -> dict[ColumnKey, str]:
    """The spec's ``columnTypes``, checked against the columns found.

    Each must name a column being migrated and a type that holds every one of its values exactly
    (a rebuild that rounds values would pass no checksum).
    """
    requested = spec.requested_column_types()
    columns = {column_key(c): c for c in inventory.columns}
    for key, type_name in requested.items():
        column = columns.get(key)
        if column is None:
            raise PlanningError(
                Reason.TABLE_NOT_FOUND,
                f"columnTypes: {'.'.join(key)} is not a {inventory.source.name} column being migrated",
            )
        if not holds_exactly(column.type_name, type_name):
            raise PlanningError(
                Reason.UNSUPPORTED_COLUMN,
                f"columnTypes: column {column.display} is {column.type_name}, and {type_name} would not "
                f"hold every one of its values exactly",
            )
    return requested


def _conversion(
    inventory: SourceInventory, surface: TargetSurface, column: VectorColumn, requested: str | None
) -> ColumnConversion:
    target_type = map_type(surface, column, requested)
    type_sql = qualify(target_type.schema, target_type.name)
    if target_type.has_typmod and column.dims:
        type_sql += f"({column.dims})"
    source_name, target_name = column.type_name, target_type.name
    if column.array:
        # An array's text form is its elements' text forms: each parsed by the target's input function.
        return ColumnConversion(column, target_type, type_sql + "[]", "text")
    if not surface.collides and (source_name, target_name) in surface.casts:
        path = "direct"
    elif (source_name, FLOAT4_ARRAY) in inventory.casts and (FLOAT4_ARRAY, target_name) in surface.casts:
        path = "real[]"
    else:
        path = "text"  # every type has I/O conversion through text: slowest, always there
    return ColumnConversion(column, target_type, type_sql, path)


def _alter_columns(
    conversions: tuple[ColumnConversion, ...], schema: str, table: str, *, stage: str, owner: str | None
) -> Statement:
    """One ALTER TABLE per table, so a table with several vector columns is rewritten once.

    stage "direct": source type straight to the target type (both installed at once);
    "to-intermediate"/"from-intermediate": through real[] or text while the names collide.
    """
    clauses = []
    for conversion in conversions:
        column = conversion.column
        if (column.schema, column.table) != (schema, table):
            continue
        name = quote_ident(column.column)
        target = conversion.target_type_sql
        intermediate = _BUILTIN_TYPES["text" if conversion.cast_path == "direct" else conversion.cast_path]
        if stage == "to-intermediate":
            clauses.append(f"ALTER COLUMN {name} TYPE {intermediate} USING {name}::{intermediate}")
        elif stage == "from-intermediate":
            clauses.append(f"ALTER COLUMN {name} TYPE {target} USING {name}::{target}")
        else:
            via = "" if conversion.cast_path == "direct" else f"::{intermediate}"
            clauses.append(f"ALTER COLUMN {name} TYPE {target} USING {name}{via}::{target}")
    step = StatementKind.CONVERT_TO_INTERMEDIATE if stage == "to-intermediate" else StatementKind.CONVERT_COLUMNS
    return Statement(step, f"ALTER TABLE {qualify(schema, table)} " + ", ".join(clauses), run_as=owner)


_BUILTIN_TYPES = {"real[]": "pg_catalog.float4[]", "text": "pg_catalog.text"}


def _storage_kept(conversions: tuple[ColumnConversion, ...]) -> list[Statement]:
    """A column's SET STORAGE set again: a new type gives the column its own (a person's choice would be lost)."""
    return [
        Statement(StatementKind.RECREATE_DEPENDENT, sql)
        for c in conversions
        if c.column.storage
        and (sql := set_storage_sql(qualify(c.column.schema, c.column.table), c.column.column, c.column.storage))
    ]


def functions_an_application_may_miss(inventory: SourceInventory, surface: TargetSurface) -> list[str]:
    """What queries calling the source's functions by name need after the migration: the engine cannot see them."""
    renamed, missing = [], []
    for name in sorted(inventory.callable_functions):
        target = target_function_for(surface, name)
        if target is None:
            missing.append(f"{name}()")
        elif target != name:
            renamed.append(f"{name}() by {target}()")
    source, target_name = inventory.source.name, surface.extension
    warnings = []
    if missing:
        warnings.append(
            f"{target_name} has no function taking its type for {source}'s {', '.join(missing)}: application "
            "queries calling them by name fail after the migration"
        )
    if renamed:
        warnings.append(f"application queries must call {source}'s {', '.join(renamed)} after the migration")
    return warnings


def _rebuild(
    inventory: SourceInventory,
    surface: TargetSurface,
    index: SavedIndex,
    types_by_column: dict[ColumnKey, TargetType],
    type_map: dict[str, tuple[str, str]],
    spec: VectorMigrationSpec,
    warnings: list[str],
) -> IndexRebuild:
    target_type = types_by_column[index.column_key]
    method, opclass = map_index(surface, index, target_type)
    concurrent = spec.reindex.mode is ReindexMode.CONCURRENT
    known_bug = concurrent_build_bug(surface, method)
    if concurrent and known_bug:
        warnings.append(f"index {index.name} is built inside the swap, not concurrently: {known_bug}")
        concurrent = False
    if concurrent and index.in_partition_tree:
        warnings.append(f"index {index.name} is built inside the swap, not concurrently: {IN_A_TREE}")
        concurrent = False
    options = dict(index.options)
    accepted = KNOWN_INDEX_PARAMETERS.get(method_kind(method), frozenset())
    for name, value in spec.reindex.parameters.items():
        if name in options or name in accepted:
            options[name] = str(value)
    with_clause = (
        " WITH (" + ", ".join(f"{quote_ident(k)} = {quote_literal(v)}" for k, v in sorted(options.items())) + ")"
        if options
        else ""
    )
    tablespace = f" TABLESPACE {quote_ident(index.tablespace)}" if index.tablespace else ""
    target_predicate = _predicate_for(index, inventory, surface, type_map) if index.predicate else None
    predicate = f" WHERE {target_predicate}" if target_predicate else ""
    tail = f"{with_clause}{tablespace}{predicate}"
    rebuild = IndexRebuild(index, method, opclass, "", concurrent, tail, target_predicate)
    definition = rebuild.definition_on(index.table_schema, index.table, index.name, concurrently=concurrent)
    return IndexRebuild(index, method, opclass, definition, concurrent, tail, target_predicate)


def _predicate_for(
    index: SavedIndex, inventory: SourceInventory, surface: TargetSurface, type_map: dict[str, tuple[str, str]]
) -> str:
    """The predicate as saved, or rewritten when it names the source's types or functions."""
    assert index.predicate is not None  # noqa: S101 - called only for partial indexes
    names = {*inventory.source_functions, *inventory.source_type_names.values()}
    if not any(name in index.predicate for name in names):
        return index.predicate  # most predicates (category = 'a') name none: no parser needed
    try:
        return target_predicate(index.predicate, inventory, surface, type_map)
    except MappingError as error:
        raise MappingError(error.reason, f"index {index.schema}.{index.name}: {error}") from None


def _carry_setting(
    inventory: SourceInventory, surface: TargetSurface, setting: SavedSetting, warnings: list[str]
) -> SettingCarry:
    candidates = [
        name
        for name in SETTING_CANDIDATES.get(setting.name, ())
        if name in surface.settings and (name != setting.name or surface.shares_source_library)
    ]
    if not candidates:
        warnings.append(
            f"setting {setting.name} = {setting.value} ({setting.scope}) has no counterpart in "
            f"{surface.extension}; it is left as it is"
        )
        return SettingCarry(setting, None, None)
    target_name = candidates[0]
    if target_name == setting.name:
        return SettingCarry(setting, target_name, None)  # the target reads the same setting
    guc = ".".join(quote_ident(part) for part in target_name.split("."))
    database = quote_ident(inventory.server.database)
    if setting.role and setting.database_scoped:
        prefix = f"ALTER ROLE {quote_ident(setting.role)} IN DATABASE {database}"
    elif setting.role:
        prefix = f"ALTER ROLE {quote_ident(setting.role)}"
    else:
        prefix = f"ALTER DATABASE {database}"
    return SettingCarry(setting, target_name, f"{prefix} SET {guc} = {quote_literal(setting.value)}")


def _drop_dependents(inventory: SourceInventory, function_drops: tuple[Statement, ...]) -> list[Statement]:
    statements = drop_views(inventory.views)
    statements += [
        Statement(StatementKind.DROP_INDEX, f"DROP INDEX {qualify(index.schema, index.name)} RESTRICT")
        for index in inventory.indexes
        if index.attached_to is None  # an attached index goes with the one it is attached to
    ]
    statements += function_drops
    statements += [
        Statement(
            StatementKind.DROP_DEPENDENT,
            f"ALTER TABLE {qualify(d.schema, d.table)} ALTER COLUMN {quote_ident(d.column)} DROP DEFAULT",
        )
        for d in inventory.defaults
    ]
    return statements


def _type_map(inventory: SourceInventory, surface: TargetSurface) -> dict[str, tuple[str, str]]:
    """Each source type's name, to the (schema, name) of the target type of the same kind."""
    type_map = {}
    for name in inventory.source_type_names.values():
        mapped = target_type_for(surface, name)
        if mapped is not None:
            type_map[name] = (mapped.schema, mapped.name)
    return type_map


def _set_defaults(defaults: list[tuple[str, str, str, str]]) -> list[Statement]:
    """Each saved column default set again (its expression rewritten for the target)."""
    return [
        Statement(
            StatementKind.RECREATE_DEPENDENT,
            f"ALTER TABLE {qualify(schema, table)} ALTER COLUMN {quote_ident(column)} SET DEFAULT {expression}",
        )
        for schema, table, column, expression in defaults
    ]


def _rewritten_defaults(
    inventory: SourceInventory, type_map: dict[str, tuple[str, str]]
) -> list[tuple[str, str, str, str]]:
    """Each saved column default's expression with the target's type names: (schema, table, column, expression)."""
    if not inventory.defaults:
        return []
    # Imported here: the parser costs the operator ~4 MB of memory (bench/), needed only for these.
    from .rewrite import RewriteError, rewrite_expression

    rewritten = []
    for default in inventory.defaults:
        column = f"{default.schema}.{default.table}.{default.column}"
        try:
            expression = rewrite_expression(default.expression, type_map, inventory.source.schema)
        except RewriteError as error:
            raise PlanningError(
                Reason.BLOCKING_DEPENDENT, f"the default of {column} cannot be carried: {error}"
            ) from None
        rewritten.append((default.schema, default.table, default.column, expression))
    return rewritten
