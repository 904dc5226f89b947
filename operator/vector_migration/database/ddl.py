"""DDL written once for every strategy: the target's CREATE EXTENSION and a relation's grants replayed."""

from __future__ import annotations

from collections.abc import Iterable

from .sql import qualify, quote_ident, quote_literal

# Privileges a GRANT may name on a table or view (aclexplode's privilege_type values for relations).
GRANTABLE_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
)


FUNCTION_PRIVILEGES = frozenset({"EXECUTE"})
SEQUENCE_PRIVILEGES = frozenset({"USAGE", "SELECT", "UPDATE"})
# Privileges a GRANT may give on a column (aclexplode of pg_attribute.attacl)
COLUMN_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "REFERENCES"})


class UnknownPrivilege(ValueError):
    """A privilege no GRANT on a relation can name (the catalog said something this code does not know)."""


# SET STORAGE's words, by pg_attribute.attstorage
STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "x": "EXTENDED", "m": "MAIN"}


def analyze_sql(schema: str, table: str) -> str:
    """Fresh planner statistics for a table (the reindex runs it; Replicate's plan shows it)."""
    return f"ANALYZE {qualify(schema, table)}"


def set_storage_sql(relation: str, column: str, storage: str) -> str | None:
    """A column's SET STORAGE a person chose, made again (None for a letter this code does not know)."""
    if storage not in STORAGE:
        return None
    return f"ALTER TABLE {relation} ALTER COLUMN {quote_ident(column)} SET STORAGE {STORAGE[storage]}"


def create_extension_sql(extension: str, version: str | None, schema: str) -> str:
    """CREATE EXTENSION of the target, at a version when one is asked for, in a schema."""
    pinned = f" VERSION {quote_literal(version)}" if version else ""
    return f"CREATE EXTENSION {quote_ident(extension)}{pinned} SCHEMA {quote_ident(schema)}"


def grant_statements(
    target: str, grants: Iterable[tuple[str, str, bool]], allowed: frozenset[str] = GRANTABLE_PRIVILEGES
) -> list[str]:
    """GRANTs giving ``target`` (a qualified relation, or "FUNCTION f(args)") the privileges another one had.

    Each grant is (grantee, privilege, grantable). Raises UnknownPrivilege for a privilege outside
    ``allowed`` rather than writing it into SQL.
    """
    return [_grant(privilege, None, target, grantee, grantable, allowed) for grantee, privilege, grantable in grants]


def column_grant_statements(target: str, grants: Iterable[tuple[str, str, str, bool]]) -> list[str]:
    """GRANTs giving ``target``'s columns what another relation's had: (column, grantee, privilege, grantable)."""
    return [
        _grant(privilege, column, target, grantee, grantable, COLUMN_PRIVILEGES)
        for column, grantee, privilege, grantable in grants
    ]


def _grant(
    privilege: str, column: str | None, target: str, grantee: str, grantable: bool, allowed: frozenset[str]
) -> str:
    """One GRANT (of one column's privilege, with ``column``); UnknownPrivilege rather than SQL for one not allowed."""
    if privilege not in allowed:
        raise UnknownPrivilege(privilege)
    who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
    on_column = f" ({quote_ident(column)})" if column is not None else ""
    option = " WITH GRANT OPTION" if grantable else ""
    return f"GRANT {privilege}{on_column} ON {target} TO {who}{option}"
