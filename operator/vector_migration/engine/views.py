"""Views around a conversion: dropped before the columns change type, created again after, as they were.

A view, or a materialized view, that reads a migrated column stops ``ALTER COLUMN … TYPE``; the
swap (and Parallel's finalize) drops it, views over others first, and creates it again from its
definition with its options, owner, indexes, grants and comment.
"""

from __future__ import annotations

from ..database.catalog import SavedView
from ..database.ddl import UnknownPrivilege, grant_statements
from ..database.sql import qualify, quote_ident, quote_literal
from ..vocabulary import Reason, StatementKind
from .plan import PlanningError, Statement


def drop_views(views: list[SavedView]) -> list[Statement]:
    """Saved views dropped, views over others first (RESTRICT: nothing else may depend on them)."""
    statements = []
    for view in sorted(views, key=lambda v: (-v.depth, v.schema, v.name)):
        kind = "MATERIALIZED VIEW" if view.materialized else "VIEW"
        statements.append(
            Statement(StatementKind.DROP_DEPENDENT, f"DROP {kind} {qualify(view.schema, view.name)} RESTRICT")
        )
    return statements


def recreate_view(view: SavedView, carried: frozenset[str] = frozenset(), query: str | None = None) -> list[Statement]:
    """A saved view created again from its definition, with its options, owner, indexes, grants and comment.

    ``carried`` are index definitions built later from their rewritten form (an HNSW index on a
    materialized view uses the source's operator class): they are left out here. ``query`` replaces
    the view's own when that names the source's types or functions (carry.plan_carried).
    """
    name = qualify(view.schema, view.name)
    kind = "MATERIALIZED VIEW" if view.materialized else "VIEW"
    options = ""
    if view.options:
        pairs = [option.split("=", 1) for option in view.options]
        options = " WITH (" + ", ".join(f"{quote_ident(k)} = {quote_literal(v)}" for k, v in pairs) + ")"
    create = f"CREATE {kind} {name}{options} AS {query or view.definition}"
    if view.materialized:
        create += " WITH DATA" if view.populated else " WITH NO DATA"
    statements = [
        # CREATE MATERIALIZED VIEW runs the view's query: as its owner, who then owns it as before
        Statement(StatementKind.RECREATE_DEPENDENT, create, run_as=view.owner if view.materialized else None),
        Statement(StatementKind.RECREATE_DEPENDENT, f"ALTER {kind} {name} OWNER TO {quote_ident(view.owner)}"),
    ]
    statements += [
        Statement(StatementKind.RECREATE_DEPENDENT, definition)
        for definition in view.index_definitions
        if definition not in carried
    ]
    try:
        granted = grant_statements(name, view.grants)
    except UnknownPrivilege as error:
        raise PlanningError(
            Reason.BLOCKING_DEPENDENT, f"view {view.schema}.{view.name} has an unknown privilege {str(error)!r}"
        ) from None
    statements += [Statement(StatementKind.RECREATE_DEPENDENT, grant) for grant in granted]
    if view.comment is not None:
        statements.append(
            Statement(StatementKind.RECREATE_DEPENDENT, f"COMMENT ON {kind} {name} IS {quote_literal(view.comment)}")
        )
    return statements
