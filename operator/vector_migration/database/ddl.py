"""DDL written once for every strategy: the target's CREATE EXTENSION and a relation's grants replayed."""

from __future__ import annotations

from collections.abc import Iterable

from .sql import quote_ident, quote_literal

# Privileges a GRANT may name on a table or view (aclexplode's privilege_type values for relations).
GRANTABLE_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
)


FUNCTION_PRIVILEGES = frozenset({"EXECUTE"})


class UnknownPrivilege(ValueError):
    """A privilege no GRANT on a relation can name (the catalog said something this code does not know)."""


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
    statements = []
    for grantee, privilege, grantable in grants:
        if privilege not in allowed:
            raise UnknownPrivilege(privilege)
        who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
        option = " WITH GRANT OPTION" if grantable else ""
        statements.append(f"GRANT {privilege} ON {target} TO {who}{option}")
    return statements
