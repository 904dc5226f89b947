"""Reading the database: what the source extension holds and what depends on it.

Everything here is a read; nothing changes the database. The results are plain frozen
dataclasses so the planner that consumes them is a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from ..vocabulary import Reason
from .sql import qualify

MIN_SERVER_VERSION_NUM = 140000  # RuVector requires PostgreSQL 14+

# Index storage parameters each access-method kind accepts, for spec.reindex.parameters overrides.
KNOWN_INDEX_PARAMETERS = {"hnsw": frozenset({"m", "ef_construction"}), "ivfflat": frozenset({"lists"})}


@dataclass(frozen=True)
class Blocker:
    """Something that stops the migration before it changes anything, with a reason a user can act on."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class ServerFacts:
    """The server and the session's role."""

    version_num: int
    version: str
    database: str
    database_oid: int
    user: str
    superuser: bool
    can_create_database: bool
    database_bytes: int = 0
    # The login's own powers, when it is an admin acting as the application's role (SET ROLE):
    # what CREATE/DROP EXTENSION is run with (engine.context.as_admin).
    login_superuser: bool = False


@dataclass(frozen=True)
class InstalledExtension:
    """An installed extension."""

    oid: int
    name: str
    version: str
    schema: str


@dataclass(frozen=True)
class VectorColumn:
    """A table column whose type belongs to the source extension."""

    schema: str
    table: str
    table_oid: int
    column: str
    attnum: int
    type_schema: str
    type_name: str
    typmod: int  # pgvector stores the dimension count as the typmod; -1 when unconstrained
    array: bool = False  # vector[]: type_name is the element's; converted element-wise through text
    # SET STORAGE a person chose (pg_attribute.attstorage where it is not the type's own): set again
    # after the conversion, which gives the column the new type's
    storage: str | None = None
    partitioned: bool = False  # a partitioned table's: its partitions hold the rows (inventory.partition_columns)

    @property
    def dims(self) -> int | None:
        """Declared dimensions, if any."""
        return self.typmod if self.typmod > 0 else None

    @property
    def qualified_table(self) -> str:
        """The quoted, qualified table name."""
        return qualify(self.schema, self.table)

    @property
    def display(self) -> str:
        """schema.table.column for messages."""
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True)
class SavedIndex:
    """A vector index as it exists before the swap: everything needed to rebuild it."""

    oid: int
    schema: str
    name: str
    table_schema: str
    table: str
    column: str
    method: str
    method_owned_by_source: bool
    opclass_schema: str
    opclass: str
    ordering_operator: str | None
    options: tuple[tuple[str, str], ...]
    predicate: str | None
    tablespace: str | None
    definition: str
    comment: str | None = None  # COMMENT ON INDEX: given again after the index is built on the target
    # In a partitioned table's tree: the migrated column's table (the tree's root), the index this
    # one is attached to, and whether it is itself partitioned (made ON ONLY, valid once its own are attached)
    root: tuple[str, str] | None = None
    attached_to: tuple[str, str] | None = None
    partitioned: bool = False

    @property
    def column_key(self) -> tuple[str, str, str]:
        """(schema, table, column) of the migrated column the index is on: a partition's is its root's."""
        schema, table = self.root or (self.table_schema, self.table)
        return schema, table, self.column

    @property
    def in_partition_tree(self) -> bool:
        """Whether the index is on a partitioned table or one of its partitions."""
        return self.root is not None


@dataclass(frozen=True)
class PartitionColumn:
    """A migrated column of a partitioned table, as one of its partitions has it.

    ALTER TABLE on the root converts every partition's; the catalog shows each, and a Rebuild
    empties and refills the leaves (a partitioned table holds no rows of its own).
    """

    root: tuple[str, str]
    schema: str
    table: str
    oid: int
    column: str
    attnum: int
    leaf: bool


@dataclass(frozen=True)
class KeyOpclass:
    """The operator class of one key column of a carried index."""

    schema: str
    name: str
    owned_by_source: bool
    input_type: str  # pg_type.typname of the class's input type
    ordering_operator: str | None


@dataclass(frozen=True)
class CarriedIndex:
    """An index beyond a plain vector column's: an expression, several keys, or a source class on a built-in type.

    pgvector's README indexes ``(embedding::halfvec(n)) halfvec_l2_ops`` and
    ``(binary_quantize(embedding)::bit(n)) bit_hamming_ops``; a ``bit`` column (PostgreSQL's own type)
    indexed with pgvector's ``bit_hamming_ops`` is one too. Its definition is rewritten for the target
    through the parser when the target offers every class, type and function it uses; otherwise it
    is refused, or dropped under ``indexes.unmappable: Drop``.
    """

    oid: int
    schema: str
    name: str
    table_schema: str
    table: str
    owner: str
    method: str
    method_owned_by_source: bool
    keys: tuple[KeyOpclass, ...]
    definition: str  # pg_get_indexdef
    constraint: str | None = None  # the UNIQUE/EXCLUDE constraint it serves: refused, never dropped
    comment: str | None = None  # COMMENT ON INDEX: given again after the index is built on the target


@dataclass(frozen=True)
class SavedConstraint:
    """A CHECK constraint that calls or names the source extension's objects."""

    oid: int
    schema: str
    table: str
    name: str
    definition: str  # pg_get_constraintdef: "CHECK (...)" [NOT VALID]
    owner: str


@dataclass(frozen=True)
class ReferencingKey:
    """A foreign key of another table that references a migrated table."""

    schema: str
    table: str
    name: str
    definition: str  # pg_get_constraintdef: FOREIGN KEY (...) REFERENCES ... [DEFERRABLE ...]
    referenced: tuple[str, str]  # (schema, table) of the migrated table


@dataclass(frozen=True)
class SavedView:
    """A view or materialized view that must be dropped and recreated around the conversion."""

    oid: int
    schema: str
    name: str
    materialized: bool
    definition: str
    options: tuple[str, ...]
    owner: str
    grants: tuple[tuple[str, str, bool], ...]  # (grantee, privilege, grantable)
    comment: str | None
    populated: bool
    index_definitions: tuple[str, ...]
    depth: int  # creation order: a view depends only on views of smaller depth


@dataclass(frozen=True)
class SavedFunction:
    """A function or procedure that names a source type: dropped in the swap, created again for the target."""

    oid: int
    schema: str
    name: str
    procedure: bool
    identity: str  # pg_get_function_identity_arguments: how DROP names it
    definition: str  # pg_get_functiondef
    owner: str
    grants: tuple[tuple[str, str, bool], ...] | None  # None: the default privileges (EXECUTE to PUBLIC)
    comment: str | None
    language: str = "sql"
    search_path: str = '"$user", public'  # what its body is checked against after it is created for the target


@dataclass(frozen=True)
class SavedSetting:
    """A pgvector setting stored for the database or a role (ALTER DATABASE/ROLE ... SET)."""

    role: str | None
    database_scoped: bool
    name: str
    value: str

    @property
    def scope(self) -> str:
        """Human-readable scope."""
        if self.role and self.database_scoped:
            return f"role {self.role} in database"
        if self.role:
            return f"role {self.role}"
        return "database"


@dataclass(frozen=True)
class SavedDefault:
    """A column default that uses the source extension: dropped before the conversion, set again after it."""

    schema: str
    table: str
    column: str
    expression: str  # pg_get_expr of the default
    owner: str


@dataclass(frozen=True)
class Dependent:
    """An object depending on the source extension or a vector column, and what the swap does with it."""

    kind: str
    name: str
    handling: str


@dataclass
class SourceInventory:
    """Everything the checklist reads before planning."""

    server: ServerFacts
    source: InstalledExtension
    source_type_names: dict[int, str]
    casts: frozenset[tuple[str, str]] = frozenset()
    columns: list[VectorColumn] = field(default_factory=list)
    indexes: list[SavedIndex] = field(default_factory=list)
    views: list[SavedView] = field(default_factory=list)
    functions: list[SavedFunction] = field(default_factory=list)
    defaults: list[SavedDefault] = field(default_factory=list)
    carried_indexes: list[CarriedIndex] = field(default_factory=list)
    source_functions: frozenset[str] = frozenset()  # names of the functions the source extension owns
    # those an application calls on the source's types by name (avg, vector_dims): each needs the target's
    callable_functions: frozenset[str] = frozenset()
    constraints: list[SavedConstraint] = field(default_factory=list)
    referencing_keys: list[ReferencingKey] = field(default_factory=list)
    settings: list[SavedSetting] = field(default_factory=list)
    dependents: list[Dependent] = field(default_factory=list)
    row_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    # The role owning each migrated table and partition: statements that may run its code run as it.
    owners: dict[tuple[str, str], str] = field(default_factory=dict)
    blockers: list[Blocker] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # (relation oid, column number or 0) of columns and indexes already refused with a blocker
    refused: set[tuple[int, int]] = field(default_factory=set)
    # The migrated columns of partitioned tables, in each partition of their trees
    partition_columns: list[PartitionColumn] = field(default_factory=list)

    def tables(self) -> list[tuple[str, str]]:
        """Tables holding migrated columns, in a stable order."""
        return sorted({(column.schema, column.table) for column in self.columns})

    def stored_tables(self) -> list[tuple[str, str]]:
        """The tables holding the migrated rows: each table, or a partitioned table's leaves."""
        leaves: dict[tuple[str, str], set[tuple[str, str]]] = {
            (c.schema, c.table): set() for c in self.columns if c.partitioned
        }
        for p in self.partition_columns:
            if p.leaf:
                leaves[p.root].add((p.schema, p.table))
        return [stored for table in self.tables() for stored in sorted(leaves.get(table, {table}))]

    def relations(self) -> list[tuple[str, str]]:
        """The migrated tables and every partition of their trees: what a swap locks and alters."""
        return sorted({*self.tables(), *((p.schema, p.table) for p in self.partition_columns)})

    def partitioned_tables(self) -> list[tuple[str, str]]:
        """The partitioned tables among the migrated ones and their partitions: they hold no rows themselves."""
        roots = {(c.schema, c.table) for c in self.columns if c.partitioned}
        return sorted(roots | {(p.schema, p.table) for p in self.partition_columns if not p.leaf})

    def columns_of(self, schema: str, table: str) -> list[VectorColumn]:
        """Migrated columns of one table, in column order."""
        return sorted((c for c in self.columns if (c.schema, c.table) == (schema, table)), key=lambda c: c.attnum)


async def read_server(conn: asyncpg.Connection) -> ServerFacts:
    """Server version and the session role's powers."""
    row = await conn.fetchrow(
        """
        SELECT pg_catalog.current_setting('server_version_num')::int AS version_num,
               pg_catalog.current_setting('server_version') AS version,
               pg_catalog.current_database() AS database,
               d.oid::bigint AS database_oid,
               r.rolname AS username, r.rolsuper AS superuser, r.rolcreatedb AS createdb,
               l.rolsuper OR l.rolcreatedb AS login_createdb, l.rolsuper AS login_superuser,
               pg_catalog.pg_database_size(d.oid) AS database_bytes
          FROM pg_catalog.pg_roles r, pg_catalog.pg_roles l, pg_catalog.pg_database d
         WHERE r.rolname = current_user AND l.rolname = SESSION_USER AND d.datname = pg_catalog.current_database()
        """
    )
    return ServerFacts(
        version_num=row["version_num"],
        version=row["version"],
        database=row["database"],
        database_oid=row["database_oid"],
        user=row["username"],
        superuser=row["superuser"],
        # The login creates the scratch database when it is an admin acting as the role (as_admin).
        can_create_database=row["superuser"] or row["createdb"] or row["login_createdb"],
        database_bytes=row["database_bytes"],
        login_superuser=row["login_superuser"],
    )


async def read_extension(conn: asyncpg.Connection, name: str) -> InstalledExtension | None:
    """An installed extension by name."""
    row = await conn.fetchrow(
        """
        SELECT e.oid::bigint AS oid, e.extname, e.extversion, n.nspname
          FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = $1
        """,
        name,
    )
    if row is None:
        return None
    return InstalledExtension(row["oid"], row["extname"], row["extversion"], row["nspname"])


async def available_versions(conn: asyncpg.Connection, name: str) -> dict[str, tuple[bool, bool]]:
    """Installable versions of an extension: version -> (needs superuser, trusted)."""
    rows = await conn.fetch(
        "SELECT version, superuser, trusted FROM pg_catalog.pg_available_extension_versions WHERE name = $1",
        name,
    )
    return {row["version"]: (row["superuser"], row["trusted"]) for row in rows}


async def default_version(conn: asyncpg.Connection, name: str) -> str | None:
    """The version CREATE EXTENSION installs when none is named."""
    value: str | None = await conn.fetchval(
        "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1", name
    )
    return value


async def owned_types(conn: asyncpg.Connection, extension_oid: int) -> dict[int, str]:
    """Base (non-array) types an extension owns: oid -> name."""
    rows = await conn.fetch(
        """
        SELECT t.oid::bigint AS oid, t.typname
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_type t ON t.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = $1 AND d.deptype = 'e' AND t.typcategory <> 'A'
        """,
        extension_oid,
    )
    return {row["oid"]: row["typname"] for row in rows}


async def read_casts(conn: asyncpg.Connection, type_oids: list[int]) -> frozenset[tuple[str, str]]:
    """Casts from or to the given types, as (from type name, to type name)."""
    rows = await conn.fetch(
        """
        SELECT s.typname AS source, t.typname AS target FROM pg_catalog.pg_cast c
          JOIN pg_catalog.pg_type s ON s.oid = c.castsource JOIN pg_catalog.pg_type t ON t.oid = c.casttarget
         WHERE c.casttarget = ANY($1::oid[]) OR c.castsource = ANY($1::oid[])
        """,
        type_oids,
    )
    return frozenset((row["source"], row["target"]) for row in rows)


async def untrusted_code(conn: asyncpg.Connection, relation_oid: int) -> list[str]:
    """Functions an index's predicate or expressions call that would run with this session's privileges.

    Counted: those neither a superuser nor this role owns, called directly or through an operator;
    under an admin login acting as the application's role, this role's too (RESET ROLE escapes).
    pg_depend records every function and operator an index's expressions and predicate use.
    SECURITY DEFINER functions run as their owner whoever calls them, so they are not counted.
    """
    rows = await conn.fetch(
        """
        WITH used AS (
            SELECT d.refobjid AS function FROM pg_catalog.pg_depend d
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = $1
               AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
            UNION
            SELECT o.oprcode::pg_catalog.oid FROM pg_catalog.pg_depend d
              JOIN pg_catalog.pg_operator o ON o.oid = d.refobjid
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = $1
               AND d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
        )
        SELECT DISTINCT p.oid::pg_catalog.regprocedure::pg_catalog.text AS function, r.rolname AS owner
          FROM used JOIN pg_catalog.pg_proc p ON p.oid = used.function
          JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
         WHERE NOT r.rolsuper AND NOT p.prosecdef AND (r.rolname <> CURRENT_USER OR CURRENT_USER <> SESSION_USER)
         ORDER BY 1
        """,
        relation_oid,
    )
    return [f"{row['function']} (owned by {row['owner']})" for row in rows]


async def index_state(conn: asyncpg.Connection, schema: str, name: str) -> tuple[bool, str] | None:
    """(valid, access method) of an index, or None when there is none of that name."""
    row = await conn.fetchrow(
        """
        SELECT i.indisvalid, am.amname FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
          JOIN pg_catalog.pg_am am ON am.oid = c.relam
         WHERE n.nspname = $1 AND c.relname = $2
        """,
        schema,
        name,
    )
    return None if row is None else (row["indisvalid"], row["amname"])


async def index_names(conn: asyncpg.Connection, relation: str) -> list[str]:
    """The names of a table's indexes, oldest first."""
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = $1::pg_catalog.regclass ORDER BY c.oid
        """,
        relation,
    )
    return [row["relname"] for row in rows]


# The source extension's members ($1: its oid), for queries about what depends on them.
EXTENSION_MEMBERS = """
    WITH members AS (
        SELECT classid, objid FROM pg_catalog.pg_depend
         WHERE refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND refobjid = $1 AND deptype = 'e'
    )
"""
