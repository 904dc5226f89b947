"""The sync trigger: every row change of one table applied to its copy in the writer's own transaction.

Forward (from the checklist's prepare until the finalize) the original table feeds its shadow;
backward (from the finalize until keepOldFor has passed) the migrated table feeds the old one, so
a swap back loses nothing. The function converts the vector columns on the way.
"""

from __future__ import annotations

from ...database.sql import qualify, quote_ident
from .names import SYNC_TRIGGER, SYNC_TRUNCATE_TRIGGER, sync_function
from .recorded import ShadowTable


def _direction(forward: bool) -> str:
    return "sync" if forward else "sync_back"


def _ends(table: ShadowTable, forward: bool) -> tuple[str, str]:
    """(the table whose changes are applied, the table they are applied to), qualified.

    Forward: the original feeds the shadow. Backward (after the finalize's renames): the migrated
    table, under the original's name, feeds the old one.
    """
    schema = table.table_schema
    copy = table.shadow if forward else table.old
    return qualify(schema, table.table), qualify(schema, copy)


def function_body(table: ShadowTable, target: str, casts: dict[str, str]) -> str:
    """A trigger function mirroring every row change into ``target`` (qualified), casting vector columns."""
    key = [quote_ident(k.column) for k in table.key]
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


def install_sync(table: ShadowTable, *, forward: bool) -> list[str]:
    """The function and the row and TRUNCATE triggers that keep the copy in step."""
    source, target = _ends(table, forward)
    function = sync_function(table.table_schema, table.table, _direction(forward))
    body = function_body(table, target, table.forward if forward else table.backward)
    # Under row-level security the mirror runs as the table's owner (whom the policies do not bind,
    # FORCE being refused): a write the policies allowed on one copy is never refused on the other.
    definer = " SECURITY DEFINER" if table.row_security else ""
    owned = (
        [
            f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC",
            f"ALTER FUNCTION {function}() OWNER TO {quote_ident(table.owner)}",
        ]
        if table.row_security and table.owner
        else []
    )
    return [
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql{definer} "
        f"SET search_path = pg_catalog, pg_temp AS $vmig${body}$vmig$",
        *owned,
        f"CREATE TRIGGER {quote_ident(SYNC_TRIGGER)} AFTER INSERT OR UPDATE OR DELETE ON {source} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {quote_ident(SYNC_TRUNCATE_TRIGGER)} AFTER TRUNCATE ON {source} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


def drop_sync(table: ShadowTable, *, forward: bool) -> list[str]:
    """The triggers and the function of one direction gone (the table they are on exists)."""
    source, _ = _ends(table, forward)
    function = sync_function(table.table_schema, table.table, _direction(forward))
    return [
        f"DROP TRIGGER IF EXISTS {quote_ident(SYNC_TRIGGER)} ON {source}",
        f"DROP TRIGGER IF EXISTS {quote_ident(SYNC_TRUNCATE_TRIGGER)} ON {source}",
        f"DROP FUNCTION IF EXISTS {function}()",
    ]
