"""DDL written once for every strategy: the target's CREATE EXTENSION and a relation's grants replayed."""

from __future__ import annotations

from collections.abc import Iterable

from .sql import quote_ident, quote_literal

# Privileges a GRANT may name on a table or view (aclexplode's privilege_type values for relations).
GRANTABLE_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
)


class UnknownPrivilege(ValueError):
    """A privilege no GRANT on a relation can name (the catalog said something this code does not know)."""


def create_extension_sql(extension: str, version: str | None, schema: str) -> str:
    """CREATE EXTENSION of the target, at a version when one is asked for, in a schema."""
    pinned = f" VERSION {quote_literal(version)}" if version else ""
    return f"CREATE EXTENSION {quote_ident(extension)}{pinned} SCHEMA {quote_ident(schema)}"


def grant_statements(relation: str, grants: Iterable[tuple[str, str, bool]]) -> list[str]:
    """GRANTs giving ``relation`` (qualified) the privileges (grantee, privilege, grantable) another one had.

    Raises UnknownPrivilege for a privilege outside GRANTABLE_PRIVILEGES rather than writing it into SQL.
    """
    statements = []
    for grantee, privilege, grantable in grants:
        if privilege not in GRANTABLE_PRIVILEGES:
            raise UnknownPrivilege(privilege)
        who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
        option = " WITH GRANT OPTION" if grantable else ""
        statements.append(f"GRANT {privilege} ON {relation} TO {who}{option}")
    return statements
