"""Replicate's plan as data: the new database, the schema copy and its conversion, replication, and the switchover.

Every statement the strategy runs is built here, by pure functions, and the plan hash covers them
all, so a person approves exactly what will run. The one thing left out is the password: the
subscription's connection string is shown without it and gets it only when it runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ...database.ddl import analyze_sql
from ...database.sql import ConnectionParams, conninfo_value, qualify, quote_ident, quote_literal
from ...engine.plan import MigrationPlan, Statement
from ...vocabulary import JOURNAL_SCHEMA, JOURNAL_TABLE, StatementKind
from .names import ReplicaNames


def conninfo(params: ConnectionParams, database: str, *, with_password: bool) -> str:
    """A libpq connection string for a subscription to reach ``database`` on the same server.

    Values are quoted as libpq reads them (conninfo_value). Without the password the
    string is safe to show; the subscription is given it when it is created.
    """
    parts = [("host", params.host), ("port", str(params.port) if params.port else None), ("dbname", database)]
    parts += [("user", params.user), ("sslmode", params.sslmode), ("sslrootcert", params.sslrootcert)]
    if with_password:
        parts.append(("password", params.password))
    return " ".join(f"{key}={conninfo_value(text)}" for key, text in parts if text)


def publication(name: str, tables: tuple[tuple[str, str], ...]) -> str:
    """Publish every replicated table's inserts, updates, deletes and truncates."""
    return f"CREATE PUBLICATION {quote_ident(name)} FOR TABLE {', '.join(qualify(s, t) for s, t in tables)}"


# Logical replication carries no sequence: each takes the live database's value on the standby. The
# values are read at the switchover, so the plan shows the statement as it runs and what it binds.
SET_SEQUENCE = "SELECT pg_catalog.setval($1::pg_catalog.regclass, $2, true)"
SET_SEQUENCE_BINDS = "$1, $2: each sequence of the live database and its last value there, read at the switchover"


# Sessions ended, and a slot dropped, with values known only then: each statement as it runs, and its binds.
END_CLIENT_SESSIONS = (
    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
    "WHERE datname = $1 AND backend_type = 'client backend' AND pid <> ALL($2::int[])"
)
END_SESSIONS_BEFORE_RENAME = (
    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
    "WHERE datname = ANY($1::text[]) AND pid <> pg_catalog.pg_backend_pid()"
)
END_WALSENDER = "SELECT pg_catalog.pg_terminate_backend($1)"
DROP_SLOT = "SELECT pg_catalog.pg_drop_replication_slot($1)"


def share_lock(tables: tuple[tuple[str, str], ...]) -> str:
    """The switchover proof's hold on the live database's tables: writers wait, readers do not."""
    return f"LOCK TABLE {', '.join(qualify(schema, table) for schema, table in tables)} IN SHARE MODE"


def drop_database(name: str) -> str:
    """A database this migration made, its sessions ended."""
    return f"DROP DATABASE {quote_ident(name)} WITH (FORCE)"


def drop_publication(name: str) -> str:
    """A publication this migration made, gone (the database it is in may have been renamed since)."""
    return f"DROP PUBLICATION IF EXISTS {quote_ident(name)}"


def channel_teardown(name: str) -> tuple[Statement, ...]:
    """A replication channel taken apart: its subscription, the walsender on its slot, the slot, the publication."""
    return (
        *(Statement(StatementKind.UNSUBSCRIBE, sql) for sql in unsubscribe(name)),
        Statement(StatementKind.UNSUBSCRIBE, END_WALSENDER, binds=f"$1: the walsender streaming slot {name}, if any"),
        Statement(StatementKind.UNSUBSCRIBE, DROP_SLOT, binds=f"$1 = {name}"),
        Statement(StatementKind.UNSUBSCRIBE, drop_publication(name)),
    )


def slot(name: str) -> str:
    """The subscription's slot, made beforehand: between two databases of one server it must be."""
    return f"SELECT pg_catalog.pg_create_logical_replication_slot({quote_literal(name)}, 'pgoutput')"


def subscription(name: str, connection: str, *, copy_data: bool) -> str:
    """A subscription on the slot made beforehand; ``copy_data`` copies the tables before streaming.

    ``run_as_owner = false`` (16's default, said anyway): rows are applied as each table's owner, so a
    table owner's code never runs as the subscription's superuser.
    """
    return (
        f"CREATE SUBSCRIPTION {quote_ident(name)} CONNECTION {quote_literal(connection)} "
        f"PUBLICATION {quote_ident(name)} WITH (create_slot = false, slot_name = {quote_literal(name)}, "
        f"copy_data = {'true' if copy_data else 'false'}, run_as_owner = false)"
    )


def unsubscribe(name: str) -> list[str]:
    """Stop and drop a subscription, leaving its slot to be dropped on the publisher (same server: by us)."""
    sub = quote_ident(name)
    return [
        f"ALTER SUBSCRIPTION {sub} DISABLE",
        f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)",
        f"DROP SUBSCRIPTION {sub}",
    ]


def carried_back(tables: tuple[tuple[str, str], ...], *, across_servers: bool) -> tuple[tuple[str, str], ...]:
    """What the channel back carries, and the way back proves equal: every table, but across servers not the journal.

    There the migration's control session stays on the old database and keeps writing its
    journal; the new database's journal is not the record any more.
    """
    if not across_servers:
        return tables
    return tuple(t for t in tables if t != (JOURNAL_SCHEMA, JOURNAL_TABLE))


def allow_connections(database: str, allowed: bool) -> str:
    """Open or close a database to new sessions (superusers included)."""
    return f"ALTER DATABASE {quote_ident(database)} ALLOW_CONNECTIONS {'true' if allowed else 'false'}"


def connection_limit(database: str, limit: int) -> str:
    """Fence a database from other logins than superusers (0), or give its limit back (-1: none).

    Across servers the old database is fenced once the switchover is done, rather than closed:
    the channel back, a superuser's subscription, must still reach it.
    """
    return f"ALTER DATABASE {quote_ident(database)} CONNECTION LIMIT {int(limit)}"


def renames(pairs: list[tuple[str, str]]) -> list[str]:
    """Database renames, run in one transaction (PostgreSQL allows it): both names change, or neither."""
    return [f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}" for old, new in pairs]


@dataclass(frozen=True)
class ReplicatePlan:
    """The new database, its schema and conversion, the replication channels, and the switchover."""

    conversion: MigrationPlan
    names: ReplicaNames
    tables: tuple[tuple[str, str], ...]  # every replicated table
    database: tuple[str, ...]  # CREATE DATABASE and its settings, privileges and marker
    connection: str  # the forward subscription's connection, without the password
    back_connection: str  # the channel back's connection (to the new database), without the password
    endpoint: str | None = None  # replicate.target: where the new database is (host:port/database)
    drop_old: bool = False  # replicate.dropOld: the old database is dropped after keepOldFor

    @property
    def warnings(self) -> tuple[str, ...]:
        """The conversion's warnings."""
        return self.conversion.warnings

    @property
    def schema(self) -> tuple[Statement, ...]:
        """The conversion as it runs on the new database's empty copy: everything but index builds (and comments)."""
        return tuple(s for s in self.conversion.swap if not s.step.completes_index)

    @property
    def builds(self) -> tuple[Statement, ...]:
        """The vector indexes, built on the new database once its rows are copied, and their comments."""
        return tuple(s for s in self.conversion.swap if s.step.completes_index)

    @property
    def analyzes(self) -> tuple[Statement, ...]:
        """Fresh planner statistics for each converted table, once its indexes are built (phases.reindex.analyze)."""
        tables = sorted({(c.column.schema, c.column.table) for c in self.conversion.conversions})
        return tuple(Statement(StatementKind.ANALYZE, analyze_sql(schema, table)) for schema, table in tables)

    @property
    def prepare(self) -> tuple[Statement, ...]:
        """Before any row moves: the database, the schema (pg_dump --schema-only | pg_restore), replication."""
        names = self.names
        return (
            *(Statement(StatementKind.CREATE_DATABASE, sql) for sql in self.database),
            Statement(
                StatementKind.COPY_SCHEMA,
                f"pg_dump --schema-only --no-subscriptions {quote_ident(names.source)} "
                f"| pg_restore --exit-on-error --dbname={quote_ident(names.target)}"
                + (f"  # on {self.endpoint}" if self.endpoint else ""),
            ),
            *self.schema,
            Statement(StatementKind.PUBLISH, publication(names.forward, self.tables)),
            Statement(StatementKind.CREATE_SLOT, slot(names.forward)),
            Statement(StatementKind.SUBSCRIBE, subscription(names.forward, self.connection, copy_data=True)),
        )

    @property
    def back_tables(self) -> tuple[tuple[str, str], ...]:
        """What the channel back carries (carried_back)."""
        return carried_back(self.tables, across_servers=self.names.across_servers)

    @property
    def switchover(self) -> tuple[Statement, ...]:
        """Writes blocked on the source, the rows proven equal, replication turned around, the names swapped."""
        names = self.names
        return self._turn(names.source, names.target, names.forward, names.old, self.tables, back=True)

    def _turn(
        self, live: str, standby: str, channel: str, live_becomes: str, tables: tuple[tuple[str, str], ...],
        *, back: bool,
    ) -> tuple[Statement, ...]:  # fmt: skip
        """One turn of the names (switchover.turn); ``back``: the channel back is made (the switchover)."""
        names = self.names
        made_back = (
            (Statement(StatementKind.PUBLISH, publication(names.back, self.back_tables)),
             Statement(StatementKind.CREATE_SLOT, slot(names.back)))
            if back else ()
        )  # fmt: skip
        if names.across_servers:  # the channel back subscribed, then the live database fenced (no renames)
            after: tuple[Statement, ...] = (
                *((Statement(StatementKind.SUBSCRIBE, subscription(names.back, self.back_connection, copy_data=False)),)
                  if back else ()),
                Statement(StatementKind.BLOCK_WRITES, connection_limit(live, 0)),
                Statement(StatementKind.BLOCK_WRITES, allow_connections(live, True)),
            )  # fmt: skip
        else:
            renamed = [*renames([(live, live_becomes), (standby, live)]), allow_connections(live_becomes, True)]
            after = (
                Statement(StatementKind.RENAME_DATABASES, END_SESSIONS_BEFORE_RENAME,
                          binds=f"$1 = {{{live}, {standby}}}: both databases, renamed next"),
                *(Statement(StatementKind.RENAME_DATABASES, sql) for sql in renamed),
                *((Statement(StatementKind.SUBSCRIBE, subscription(names.back, self.connection, copy_data=False)),)
                  if back else ()),
            )  # fmt: skip
        return (
            Statement(StatementKind.LOCK, share_lock(tables)),  # the proof, writes going on (proof.hold)
            Statement(StatementKind.BLOCK_WRITES, allow_connections(live, False)),
            Statement(
                StatementKind.BLOCK_WRITES,
                END_CLIENT_SESSIONS,
                binds=f"$1 = {live}; $2: the migration's own sessions, which stay",
            ),
            Statement(StatementKind.SET_SEQUENCES, SET_SEQUENCE, binds=SET_SEQUENCE_BINDS),
            *made_back,
            *channel_teardown(channel),
            *after,
        )

    @property
    def after_keep_old_for(self) -> tuple[Statement, ...]:
        """Once keepOldFor has passed: the old database stops following (the channel back goes).

        With replicate.dropOld it goes too.
        """
        dropped = (Statement(StatementKind.DROP_DATABASE, drop_database(self.names.old)),) if self.drop_old else ()
        return (*channel_teardown(self.names.back), *dropped)

    @property
    def on_rollback(self) -> tuple[Statement, ...]:
        """What a rollback runs.

        Before the switchover, the replica taken apart and the new database dropped (only while it
        carries this migration's marker); after it, the names turned back the same way.
        """
        names = self.names
        live = names.target if names.across_servers else names.source
        return (
            *channel_teardown(names.forward),
            Statement(StatementKind.DROP_DATABASE, drop_database(names.target)),
            *self._turn(live, names.old, names.back, names.target, self.back_tables, back=False),
        )

    @property
    def plan_hash(self) -> str:
        """A digest of every statement, in order."""
        document = {
            "prepare": [s.hashed() for s in self.prepare],
            "builds": [s.hashed() for s in self.builds],
            "analyze": [s.hashed() for s in self.analyzes],
            "switchover": [s.hashed() for s in self.switchover],
            "afterKeepOldFor": [s.hashed() for s in self.after_keep_old_for],
            "onRollback": [s.hashed() for s in self.on_rollback],
            "surface": self.conversion.surface,
            "route": self.conversion.route,
            **({"endpoint": self.endpoint} if self.endpoint else {}),
        }
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        return f"sha256:{digest[:16]}"

    def as_document(self) -> dict[str, object]:
        """The plan for `vector-migration plan` and the approval ConfigMap."""

        def listed(statements: tuple[Statement, ...]) -> list[dict[str, str]]:
            return [
                {"step": s.step.value, "sql": s.sql, **({"runAs": s.run_as} if s.run_as else {}),
                 **({"binds": s.binds} if s.binds else {})}
                for s in statements
            ]  # fmt: skip

        return {
            "planHash": self.plan_hash,
            "strategy": "Replicate",
            "route": self.conversion.route,
            "target": self.conversion.surface,
            "databases": {
                "source": self.names.source,
                "new": self.names.target,
                "oldAfterSwitchover": self.names.old,
                **({"newEndpoint": self.endpoint} if self.endpoint else {}),
            },
            "replicatedTables": [f"{s}.{t}" for s, t in self.tables],
            "prepare": listed(self.prepare),
            "afterCopy": listed((*self.builds, *self.analyzes)),
            "switchover": listed(self.switchover),
            "afterKeepOldFor": listed(self.after_keep_old_for),
            "onRollback": listed(self.on_rollback),
            "warnings": list(self.warnings),
        }
