"""Carried indexes and CHECK constraints: rewritten for the target, or refused, or dropped by request.

An index beyond a plain vector column (an expression, several keys, pgvector's classes on the
built-in ``bit`` type) and a CHECK constraint that calls the source's functions are dropped before
the conversion and created again after it, their definitions rewritten through PostgreSQL's parser:
access method, each key's operator class, type names and function names become the target's. When
the target lacks one of them (RuVector has no ``binary_quantize``), the checklist refuses the index
by name, unless ``indexes.unmappable: Drop`` asks for it to be dropped: then the plan lists it, with
its definition, and it stays dropped (a rollback creates it again from that definition).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..api import VectorMigrationSpec
from ..database.catalog import CarriedIndex, SavedConstraint, SavedFunction, SourceInventory
from ..database.ddl import FUNCTION_PRIVILEGES, UnknownPrivilege, grant_statements
from ..database.sql import PINNED_SEARCH_PATH, qualify, quote_ident, quote_literal
from ..database.surface import (
    MappingError,
    TargetSurface,
    concurrent_build_bug,
    find_opclass,
    target_function_for,
    target_methods,
    target_type_for,
)
from ..database.target_checks import FINDINGS
from ..vocabulary import Reason, StatementKind, UnmappableIndexes
from .plan import CarriedBuild, CarriedFunctions, PlanningError, Rewritten, Statement, index_comment

if TYPE_CHECKING:
    from .rewrite import NameMap


@dataclass
class CarriedPlan:
    """The carried constraints and indexes with their rewritten definitions; the swap's statements follow."""

    checks: list[tuple[SavedConstraint, str]] = field(default_factory=list)
    # each index with its definition for the target, or None when indexes.unmappable: Drop drops it
    indexes: list[tuple[CarriedIndex, str | None]] = field(default_factory=list)
    # (schema, name) of materialized views: their indexes go and come back with them
    views: frozenset[tuple[str, str]] = frozenset()
    # (schema, name) -> the query of a view naming the source's types or functions, for the target
    view_queries: dict[tuple[str, str], str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def drops(self) -> list[Statement]:
        """Before the conversion: each constraint, then each index (a view's goes with the view)."""
        statements = [
            Statement(
                StatementKind.DROP_DEPENDENT,
                f"ALTER TABLE {qualify(c.schema, c.table)} DROP CONSTRAINT {quote_ident(c.name)}",
            )
            for c, _ in self.checks
        ]
        statements += [
            Statement(StatementKind.DROP_INDEX, f"DROP INDEX {qualify(i.schema, i.name)} RESTRICT")
            for i, _ in self.indexes
            if (i.table_schema, i.table) not in self.views
        ]
        return statements

    @property
    def check_statements(self) -> list[Statement]:
        """After the conversion, as each table's owner: adding a CHECK runs the owner's expression on every row."""
        return [
            Statement(
                StatementKind.RECREATE_DEPENDENT,
                f"ALTER TABLE {qualify(c.schema, c.table)} ADD CONSTRAINT {quote_ident(c.name)} {definition}",
                run_as=c.owner,
            )
            for c, definition in self.checks
        ]

    def builds(self, concurrent: bool, surface: TargetSurface) -> tuple[list[Statement], list[CarriedBuild]]:
        """Each index the target can take: built in the swap, or (``concurrent``) after its commit.

        After the commit, writes are not blocked while it builds; an access method whose concurrent
        build is known to be wrong on this target is built in the swap, as the other indexes are.
        """
        from .rewrite import built_concurrently

        in_swap: list[Statement] = []
        after: list[CarriedBuild] = []
        for index, definition in self.indexes:
            if definition is None:
                continue
            if concurrent:  # parsed only then: its method decides, and it gains CONCURRENTLY
                sql, method = built_concurrently(definition)
                if not concurrent_build_bug(surface, method):
                    table = f"{index.table_schema}.{index.table}"
                    after.append(CarriedBuild(index.schema, index.name, table, method, sql, index.comment))
                    continue
            in_swap.append(Statement(StatementKind.BUILD_INDEX, definition))
            in_swap += index_comment(index.schema, index.name, index.comment)
        return in_swap, after

    def rewritten(self, defaults: list[tuple[str, str, str, str]]) -> Rewritten:
        """The same as data, with the rewritten column defaults (a Parallel shadow makes its own)."""
        return Rewritten(
            defaults=tuple(defaults),
            checks=tuple((c.schema, c.table, c.name, definition) for c, definition in self.checks),
            indexes=tuple((i.table_schema, i.table, i.name, d) for i, d in self.indexes if d is not None),
            dropped=tuple((i.table_schema, i.table, i.name, i.definition) for i, d in self.indexes if d is None),
            views=tuple((schema, name, query) for (schema, name), query in self.view_queries.items()),
        )


def plan_carried(
    inventory: SourceInventory,
    surface: TargetSurface,
    spec: VectorMigrationSpec,
    type_map: dict[str, tuple[str, str]],
    unmapped: list[MappingError],
) -> CarriedPlan:
    """Rewrite every carried index, constraint and view query; what cannot be is added to ``unmapped`` (or dropped)."""
    carried = CarriedPlan()
    if not inventory.carried_indexes and not inventory.constraints and not inventory.views:
        return carried
    from .rewrite import RewriteError, rewrite_check, rewrite_view, type_and_function_names

    names = name_map(inventory, surface, type_map)
    source_names = names.source_types | names.source_functions
    for view in inventory.views:
        if not type_and_function_names(f"SELECT * FROM ({view.definition}) AS v") & source_names:
            continue  # created again from its definition as it is
        try:
            carried.view_queries[(view.schema, view.name)] = rewrite_view(view.definition, names, surface.extension)
        except RewriteError as error:
            where = f"view {view.schema}.{view.name}"
            unmapped.append(MappingError(Reason.BLOCKING_DEPENDENT, f"{where} cannot be carried: {error}"))
    for constraint in inventory.constraints:
        try:
            carried.checks.append((constraint, rewrite_check(constraint.definition, names, surface.extension)))
        except RewriteError as error:
            where = f"constraint {constraint.name} on {constraint.schema}.{constraint.table}"
            unmapped.append(MappingError(Reason.BLOCKING_DEPENDENT, f"{where} cannot be carried: {error}"))
    # A materialized view's index goes with the view, which the swap drops and creates again.
    carried.views = frozenset((view.schema, view.name) for view in inventory.views)
    for index in inventory.carried_indexes:
        _carry_index(index, surface, spec, names, carried, unmapped)
    return carried


def name_map(inventory: SourceInventory, surface: TargetSurface, type_map: dict[str, tuple[str, str]]) -> NameMap:
    """What the source's type and function names become on the target."""
    # Imported here: the parser costs the operator ~4 MB of memory (bench/), needed only for these.
    from .rewrite import NameMap

    return NameMap(
        types=type_map,
        functions={
            name: (surface.schema, mapped)
            for name in inventory.source_functions
            if (mapped := target_function_for(surface, name)) is not None
        },
        source_schema=inventory.source.schema,
        source_types=frozenset(inventory.source_type_names.values()),
        source_functions=inventory.source_functions,
    )


def target_predicate(
    predicate: str, inventory: SourceInventory, surface: TargetSurface, type_map: dict[str, tuple[str, str]]
) -> str:
    """A partial index's predicate for the target (``WHERE vector_dims(embedding) = 3`` names the source)."""
    from .rewrite import RewriteError, rewrite_condition

    try:
        return rewrite_condition(predicate, name_map(inventory, surface, type_map), surface.extension)
    except RewriteError as error:
        raise MappingError(Reason.UNMAPPED_INDEX, f"predicate {predicate}: {error}") from None


def code_using_operators_otherwise(inventory: SourceInventory, surface: TargetSurface) -> list[MappingError]:
    """Each view and function using an operator the target computes otherwise: it would answer otherwise."""
    if not surface.operators_otherwise or not (inventory.views or inventory.functions):
        return []
    from .rewrite import RewriteError, function_operators, operators_written

    found: list[tuple[str, set[str]]] = []
    for view in inventory.views:
        kind = "materialized view" if view.materialized else "view"
        with contextlib.suppress(RewriteError):  # unscannable: the view's own rewrite names it
            found.append((f"{kind} {view.schema}.{view.name}", operators_written(view.definition)))
    for function in inventory.functions:
        kind = "procedure" if function.procedure else "function"
        with contextlib.suppress(RewriteError):
            found.append((f"{kind} {function.schema}.{function.name}({function.identity})",
                          function_operators(function.definition)))  # fmt: skip
    return [
        MappingError(
            Reason.BLOCKING_DEPENDENT,
            f"{where} uses {operator}, which {surface.extension} computes otherwise ({how}): it would answer "
            f"otherwise after the migration ({FINDINGS})",
        )
        for where, operators in found
        for operator, how in surface.operators_otherwise
        if operator in operators
    ]


def _carry_index(
    index: CarriedIndex,
    surface: TargetSurface,
    spec: VectorMigrationSpec,
    names: NameMap,
    carried: CarriedPlan,
    unmapped: list[MappingError],
) -> None:
    where = f"index {index.schema}.{index.name} ({index.definition})"
    if index.constraint is not None:
        unmapped.append(
            MappingError(
                Reason.UNMAPPED_INDEX,
                f"{where} serves constraint {index.constraint}; drop the constraint before migrating and create "
                "it for the target afterwards",
            )
        )
        return
    try:
        definition = _rewritten(index, surface, names)
    except MappingError as error:
        if spec.indexes.unmappable is not UnmappableIndexes.DROP:
            unmapped.append(
                MappingError(error.reason, f"{error}; or set indexes.unmappable: Drop to drop it in the swap")
            )
            return
        carried.warnings.append(f"{where} is dropped (indexes.unmappable: Drop): {error}")
        definition = None
    carried.indexes.append((index, definition))


def _rewritten(index: CarriedIndex, surface: TargetSurface, names: NameMap) -> str:
    from .rewrite import RewriteError, rewrite_index

    where = f"index {index.schema}.{index.name} ({index.definition})"
    methods = target_methods(surface, index.method, index.method_owned_by_source)
    if not methods:
        raise MappingError(
            Reason.UNMAPPED_INDEX,
            f"{where}: target extension {surface.extension} has no {index.method} access method"
            + surface.failing_of_kind(index.method),
        )
    method = methods[0]
    opclasses: list[tuple[str, str] | None] = []
    for key in index.keys:
        if not key.owned_by_source:
            opclasses.append(None)
            continue
        otherwise = surface.operator_otherwise(key.ordering_operator)
        if otherwise is not None:
            raise MappingError(
                Reason.UNMAPPED_INDEX,
                f"{where}: {key.ordering_operator} computes otherwise in {surface.extension} ({otherwise})",
            )
        mapped_type = target_type_for(surface, key.input_type)
        input_type = mapped_type.name if mapped_type is not None else key.input_type
        found = find_opclass(surface, methods, input_type, key.ordering_operator)
        if found is None:
            raise MappingError(
                Reason.UNMAPPED_INDEX,
                f"{where}: operator class {key.name} has no counterpart in target extension {surface.extension}",
            )
        method = found[0]
        opclasses.append((found[1].schema, found[1].name))
    try:
        return rewrite_index(index.definition, names, method, opclasses, f"target extension {surface.extension}")
    except RewriteError as error:
        raise MappingError(Reason.UNMAPPED_INDEX, f"{where}: {error}") from None


# As pg_dump's restores do: a body is checked against the search_path of whoever calls it, not the
# migration's pinned one, so PostgreSQL's check at creation is off for these statements.
_BODIES_UNCHECKED = Statement(StatementKind.RECREATE_DEPENDENT, "SET LOCAL check_function_bodies = off")
_BODIES_CHECKED = Statement(StatementKind.RECREATE_DEPENDENT, "SET LOCAL check_function_bodies = on")
# A body is checked under the search_path it runs with, then the migration's pinned one is back.
_SEARCH_PATH_SET = "SELECT pg_catalog.set_config('search_path', "
_PINNED = Statement(StatementKind.VALIDATE_FUNCTION, f"{_SEARCH_PATH_SET}{quote_literal(PINNED_SEARCH_PATH)}, true)")


def sets_for_what_follows(statement: Statement) -> bool | None:
    """Whether a carried function's statement sets something its transaction's next statements need.

    True for the settings that a function's creation (its body unchecked) or its check (its own
    search_path) needs; False for the statement that sets them back; None for any other. Who runs
    the plan's statements in several transactions (Replicate's new database) keeps one open meanwhile.
    """
    if statement.sql == _BODIES_UNCHECKED.sql:
        return True
    if statement.sql == _BODIES_CHECKED.sql or statement.sql == _PINNED.sql:
        return False
    if statement.step is StatementKind.VALIDATE_FUNCTION and statement.sql.startswith(_SEARCH_PATH_SET):
        return True
    return None


def carry_functions(
    inventory: SourceInventory, surface: TargetSurface, type_map: dict[str, tuple[str, str]]
) -> CarriedFunctions:
    """Each saved function dropped, created again with the target's types and functions, and how to give it back."""
    if not inventory.functions:
        return CarriedFunctions((), (), ())
    # Imported here: the parser costs the operator ~4 MB of memory (bench/), needed only for functions.
    from .rewrite import RewriteError, rewrite_function

    names = name_map(inventory, surface, type_map)
    target_name = f"target extension {surface.extension}"

    drops, forward, back, validate = [], [_BODIES_UNCHECKED], [_BODIES_UNCHECKED], []
    for function in inventory.functions:
        kind = "PROCEDURE" if function.procedure else "FUNCTION"
        original = f"{kind} {qualify(function.schema, function.name)}({function.identity})"
        try:
            rewritten = rewrite_function(function.definition, type_map, inventory.source.schema, names, target_name)
        except RewriteError as error:
            raise PlanningError(
                Reason.BLOCKING_DEPENDENT,
                f"{kind.lower()} {function.schema}.{function.name}({function.identity}) cannot be carried: {error}",
            ) from None
        target = f"{kind} {rewritten.signature}"
        drops.append(Statement(StatementKind.DROP_DEPENDENT, f"DROP {original} RESTRICT"))
        forward += _created(rewritten.definition, target, function)
        back.append(Statement(StatementKind.RECREATE_DEPENDENT, f"DROP {target} RESTRICT"))
        back += _created(function.definition, original, function)
        validate += _validated(rewritten.signature, function)
    if validate:
        validate.append(_PINNED)
    return CarriedFunctions(tuple(drops), (*forward, _BODIES_CHECKED), (*back, _BODIES_CHECKED), tuple(validate))


# The validators of the languages whose bodies PostgreSQL can check without running them.
_VALIDATORS = {"sql": "pg_catalog.fmgr_sql_validator", "plpgsql": "pg_catalog.plpgsql_validator"}


def _validated(signature: str, function: SavedFunction) -> list[Statement]:
    """The body checked as PostgreSQL checks one at CREATE, under the search_path it runs with."""
    validator = _VALIDATORS.get(function.language)
    if validator is None:
        return []
    path = f"{_SEARCH_PATH_SET}{quote_literal(function.search_path)}, true)"
    check = f"SELECT {validator}({quote_literal(signature)}::pg_catalog.regprocedure)"
    return [Statement(StatementKind.VALIDATE_FUNCTION, path), Statement(StatementKind.VALIDATE_FUNCTION, check)]


def _created(definition: str, target: str, function: SavedFunction) -> list[Statement]:
    """A function created from its definition with its owner, privileges and comment."""
    sql = [definition, f"ALTER {target} OWNER TO {quote_ident(function.owner)}"]
    if function.grants is not None:
        sql.append(f"REVOKE ALL ON {target} FROM PUBLIC")
        try:
            sql += grant_statements(target, function.grants, FUNCTION_PRIVILEGES)
        except UnknownPrivilege as error:
            raise PlanningError(
                Reason.BLOCKING_DEPENDENT, f"{target} has an unknown privilege {str(error)!r}"
            ) from None
    if function.comment is not None:
        sql.append(f"COMMENT ON {target} IS {quote_literal(function.comment)}")
    return [Statement(StatementKind.RECREATE_DEPENDENT, text) for text in sql]
