"""Discovering the target extension's SQL surface instead of assuming it.

RuVector exists in three spellings (documented ``ruhnsw`` names, the 0.3.0 install script's
``hnsw`` that collides with pgvector's, and the v2 plan's pgvector-identical names). After
``CREATE EXTENSION`` the engine reads what the extension owns -- types, access methods,
operator classes, casts, settings -- and maps every source column and index onto it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import asyncpg

from ..vocabulary import Reason
from .catalog import SavedIndex, VectorColumn, owned_types, read_casts
from .sql import quote_ident
from .target_checks import FINDINGS, methods_failing, operators_otherwise
from .target_objects import TargetOpclass, TargetType

# Source type name -> target type names that hold the same values, in order of preference.
# RuVector's documented dense type is "ruvector"; the v2 plan keeps pgvector's names.
TYPE_CANDIDATES = {
    "vector": ("vector", "ruvector"),
    "halfvec": ("halfvec", "ruhalfvec"),
    "sparsevec": ("sparsevec", "rusparsevec"),
}

# Source function name -> target function names that compute the same, in order of preference:
# pgvector's vector_dims(vector) is RuVector's documented ruvector_dims(ruvector). Used for the
# expressions of carried indexes and CHECK constraints; a rollback maps them back.
FUNCTION_CANDIDATES = {
    "vector_dims": ("vector_dims", "ruvector_dims"),
    "vector_norm": ("vector_norm", "ruvector_norm"),
    "l2_distance": ("l2_distance", "ruvector_l2_distance"),
    "cosine_distance": ("cosine_distance", "ruvector_cosine_distance"),
    "l1_distance": ("l1_distance", "ruvector_l1_distance"),
    "inner_product": ("inner_product", "ruvector_inner_product"),  # both the product itself, not <#>'s negative
}

# Source setting -> target settings that mean the same; the spellings differ between RuVector's
# guide (ruvector.ef_search) and its source (ruvector.hnsw_ef_search, of which 2.0.6 calls the
# other a deprecated alias), so both are probed, the canonical one first.
SETTING_CANDIDATES = {
    "hnsw.ef_search": ("ruvector.hnsw_ef_search", "ruvector.ef_search", "hnsw.ef_search"),
    "ivfflat.probes": ("ruvector.probes", "ruvector.ivfflat_probes", "ivfflat.probes"),
}

# Those settings set wide for the probe's index check (target_checks.py), so a session's own
# (ALTER ROLE … SET hnsw.ef_search = 1) cannot fail a healthy index; one list is exhaustive.
SEARCH_WIDTH = {name: "100" for name in SETTING_CANDIDATES["hnsw.ef_search"]} | {
    name: "1" for name in SETTING_CANDIDATES["ivfflat.probes"]
}

# Extensions whose CREATE INDEX CONCURRENTLY is known to be wrong, by access-method kind.
# A Concurrent reindex builds those indexes atomically inside the swap instead.
CONCURRENT_BUILD_KNOWN_BUGS = {
    (
        "ruvector",
        "hnsw",
    ): "RuVector's HNSW refuses CREATE INDEX CONCURRENTLY ('not supported safely yet' in 2.0.6; it inserted "
    "rows twice before, ruvector PR #716)",
}

ACCESS_METHOD_KINDS = ("hnsw", "ivfflat")


def method_kind(method: str) -> str:
    """The family an access method belongs to: 'hnsw' for hnsw and ruhnsw, else its own name."""
    for kind in ACCESS_METHOD_KINDS:
        if method == kind or method.endswith(kind):
            return kind
    return method


@dataclass(frozen=True)
class TargetSurface:
    """What the target extension exposes, read from the catalog after CREATE EXTENSION."""

    extension: str
    version: str
    schema: str
    types: tuple[TargetType, ...]
    methods: tuple[str, ...]
    opclasses: tuple[TargetOpclass, ...]
    operator_names: frozenset[str]
    functions: frozenset[str]  # those taking one of its own types first (the ones an expression can call)
    settings: frozenset[str]
    shares_source_library: bool
    collides: bool = False
    # (from type name, to type name) pairs with a cast, by pg_type.typname (real[] is "_float4")
    casts: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    # (operator, what it computes against pgvector) for each operator measured to compute otherwise
    operators_otherwise: tuple[tuple[str, str], ...] = ()
    # (access method, what it answered) for each method whose index answered otherwise than an exact search
    methods_failing: tuple[tuple[str, str], ...] = ()

    def operator_otherwise(self, operator: str | None) -> str | None:
        """How the target's ``operator`` computes otherwise than pgvector's, if it does."""
        return next((how for name, how in self.operators_otherwise if name == operator), None)

    def method_failing(self, method: str) -> str | None:
        """What the target's access method answered in its check, if it answered wrongly."""
        return next((how for name, how in self.methods_failing if name == method), None)

    def failing_of_kind(self, method: str) -> str:
        """'; ruivfflat …' for each method of ``method``'s kind that failed its check: why none serves."""
        kind = method_kind(method)
        return "".join(
            f"; its {name} answered otherwise than an exact search ({how}; {FINDINGS})"
            for name, how in self.methods_failing
            if method_kind(name) == kind
        )

    def catalog_summary(self) -> dict[str, object]:
        """What the catalog says of it: enough to tell the extension created in a swap is the one planned for."""
        return {
            "extension": self.extension,
            "version": self.version,
            "types": sorted(t.name for t in self.types),
            "methods": sorted(self.methods),
            "opclasses": sorted(f"{o.method}:{o.name}" for o in self.opclasses),
            "collides": self.collides,
        }

    def summary(self) -> dict[str, object]:
        """A stable, hashable description (used in the plan and its hash): the catalog's, and what was measured."""
        return {
            **self.catalog_summary(),
            **({"operatorsOtherwise": dict(self.operators_otherwise)} if self.operators_otherwise else {}),
            **({"methodsFailing": dict(self.methods_failing)} if self.methods_failing else {}),
        }


# size: one pass over the extension's catalog objects: types, casts, methods, classes, settings
async def discover(
    conn: asyncpg.Connection, extension: str, source_library: str | None, *, collides: bool, measure: bool = True
) -> TargetSurface:
    """Read an installed target extension's surface (run inside the transaction that created it).

    With ``measure``, its operators and index methods are measured too (database/target_checks.py):
    the probe does, once; the swap's check that it created the planned extension does not, because
    it runs under the tables' lock, where every millisecond is the application's.
    """
    row = await conn.fetchrow(
        """
        SELECT e.oid::bigint AS oid, e.extversion, n.nspname
          FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = $1
        """,
        extension,
    )
    if row is None:
        raise LookupError(f"extension {extension} is not installed")
    oid = row["oid"]
    owned = list(await owned_types(conn, oid))
    type_rows = await conn.fetch(
        """
        SELECT t.oid::bigint AS oid, n.nspname, t.typname, t.typmodin <> 0 AS has_typmod
          FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
         WHERE t.oid = ANY($1::oid[])
        """,
        owned,
    )
    methods = await conn.fetch(
        """
        SELECT a.amname, p.probin
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_am a ON a.oid = d.objid
          JOIN pg_catalog.pg_proc p ON p.oid = a.amhandler
         WHERE d.classid = 'pg_catalog.pg_am'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = $1 AND d.deptype = 'e'
        """,
        oid,
    )
    opclass_rows = await conn.fetch(
        """
        SELECT oc.opcname, n.nspname, am.amname, it.typname AS input_type, oc.opcdefault,
               (SELECT o.oprname FROM pg_catalog.pg_amop ao
                  JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr
                 WHERE ao.amopfamily = oc.opcfamily AND ao.amoppurpose = 'o'
                 ORDER BY ao.amopstrategy LIMIT 1) AS ordering_operator
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_opclass oc ON oc.oid = d.objid
          JOIN pg_catalog.pg_namespace n ON n.oid = oc.opcnamespace
          JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod
          JOIN pg_catalog.pg_type it ON it.oid = oc.opcintype
         WHERE d.classid = 'pg_catalog.pg_opclass'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = $1 AND d.deptype = 'e'
         ORDER BY am.amname, oc.opcname
        """,
        oid,
    )
    # A function counts only when it takes one of the extension's own types first: RuVector 2.0.6's
    # vector_dims and vector_norm take real[], so vector_dims(embedding) must become ruvector_dims.
    member_names = await conn.fetch(
        """
        SELECT 'f' AS kind, p.proname AS name FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = $1 AND d.deptype = 'e'
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND p.pronargs > 0 AND p.proargtypes[0] = ANY($2::oid[])
        UNION ALL
        SELECT 'o', o.oprname FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_operator o ON o.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND d.refobjid = $1 AND d.deptype = 'e'
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
        """,
        oid,
        owned,
    )
    types = tuple(TargetType(r["oid"], r["nspname"], r["typname"], r["has_typmod"]) for r in type_rows)
    dense = next((t for t in types if t.name in TYPE_CANDIDATES["vector"]), None)
    type_oids = [t.oid for t in types]
    cast_rows = await read_casts(conn, type_oids)
    settings = await _target_settings(conn, types)
    libraries = {r["probin"] for r in methods if r["probin"]}
    opclasses = tuple(
        TargetOpclass(r["nspname"], r["opcname"], r["amname"], r["input_type"], r["ordering_operator"], r["opcdefault"])
        for r in opclass_rows
    )
    return TargetSurface(
        extension=extension,
        version=row["extversion"],
        schema=row["nspname"],
        types=types,
        methods=tuple(sorted(r["amname"] for r in methods)),
        opclasses=opclasses,
        operator_names=frozenset(r["name"] for r in member_names if r["kind"] == "o"),
        functions=frozenset(r["name"] for r in member_names if r["kind"] == "f"),
        settings=settings,
        shares_source_library=source_library is not None and source_library in libraries,
        collides=collides,
        casts=cast_rows,
        operators_otherwise=await operators_otherwise(conn, extension, row["extversion"], dense) if measure else (),
        methods_failing=await methods_failing(conn, extension, row["extversion"], dense, opclasses, SEARCH_WIDTH)
        if measure
        else (),
    )


async def is_the_planned_target(conn: asyncpg.Connection, planned: TargetSurface, source_library: str | None) -> bool:
    """Whether the extension a swap just created is the one the plan was made for, by its catalog (not measured)."""
    created = await discover(conn, planned.extension, source_library, collides=planned.collides, measure=False)
    return created.catalog_summary() == planned.catalog_summary()


async def _target_settings(conn: asyncpg.Connection, types: tuple[TargetType, ...]) -> frozenset[str]:
    """Settings the target's library registers: call one of its C functions so it loads, then look."""
    for target_type in types:
        # Reading a value through the type's input function loads the library that defines it;
        # a type that rejects '[1]' has still loaded it, so the error is of no interest.
        with contextlib.suppress(asyncpg.PostgresError):
            async with conn.transaction():
                await conn.execute(
                    f"SELECT '[1]'::pg_catalog.text::{quote_ident(target_type.schema)}.{quote_ident(target_type.name)}"
                )
    names = [name for candidates in SETTING_CANDIDATES.values() for name in candidates]
    rows = await conn.fetch("SELECT name FROM pg_catalog.pg_settings WHERE name = ANY($1::text[])", names)
    return frozenset(row["name"] for row in rows)


async def source_library(conn: asyncpg.Connection, extension_oid: int) -> str | None:
    """The shared library serving the source extension's access methods."""
    value: str | None = await conn.fetchval(
        """
        SELECT p.probin FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_am a ON a.oid = d.objid
          JOIN pg_catalog.pg_proc p ON p.oid = a.amhandler
         WHERE d.classid = 'pg_catalog.pg_am'::pg_catalog.regclass AND d.refobjid = $1 AND d.deptype = 'e'
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
         LIMIT 1
        """,
        extension_oid,
    )
    return value


class MappingError(LookupError):
    """A source column or index has no counterpart on the target."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _type_candidates(type_name: str) -> tuple[str, ...]:
    """Target names for a source type, in both directions (a rollback maps ruvector back to vector)."""
    forward = TYPE_CANDIDATES.get(type_name, ())
    backward = tuple(source for source, targets in TYPE_CANDIDATES.items() if type_name in targets)
    return tuple(dict.fromkeys((type_name, *forward, *backward)))


# Source type -> target type names that hold every one of its values exactly although of another
# kind: a 16-bit float is a 32-bit float without rounding, so halfvec fits a dense vector type.
EXACT_WIDENINGS = {"halfvec": TYPE_CANDIDATES["vector"]}


def holds_exactly(source_type: str, target_type: str) -> bool:
    """Whether a column of ``source_type`` may become ``target_type`` without any value changing."""
    return target_type in _type_candidates(source_type) or target_type in EXACT_WIDENINGS.get(source_type, ())


def map_type(surface: TargetSurface, column: VectorColumn, requested: str | None = None) -> TargetType:
    """The target type that holds a source column's values: ``requested`` if named, else the same kind."""
    by_name = {t.name: t for t in surface.types}
    if requested is not None:
        if requested in by_name:
            return by_name[requested]
        raise MappingError(
            Reason.UNSUPPORTED_COLUMN,
            f"column {column.display}: columnTypes asks for type {requested}, which target extension "
            f"{surface.extension} does not offer (it offers {', '.join(sorted(by_name)) or 'no types'})",
        )
    for candidate in _type_candidates(column.type_name):
        if candidate in by_name:
            return by_name[candidate]
    offered = ", ".join(sorted(by_name)) or "no types"
    widening = next((name for name in EXACT_WIDENINGS.get(column.type_name, ()) if name in by_name), None)
    option = (
        f"; it holds every value exactly as {widening}: name it in columnTypes "
        f"({{table: {column.schema}.{column.table}, column: {column.column}, type: {widening}}})"
        if widening
        else ""
    )
    raise MappingError(
        Reason.UNSUPPORTED_COLUMN,
        f"column {column.display} is {column.type_name}, which target extension {surface.extension} "
        f"cannot hold (it offers {offered}){option}",
    )


def target_methods(surface: TargetSurface, method: str, owned_by_source: bool) -> list[str]:
    """The target's access methods of the same kind as a source index's (a built-in one stays itself)."""
    kind = method_kind(method)
    usable = [m for m in surface.methods if method_kind(m) == kind and surface.method_failing(m) is None]
    return usable or ([method] if not owned_by_source else [])


def find_opclass(
    surface: TargetSurface, methods: list[str], input_type: str, ordering_operator: str | None
) -> tuple[str, TargetOpclass] | None:
    """The first of ``methods`` with a target operator class for ``input_type`` serving the same operator."""
    for method in methods:
        for opclass in surface.opclasses:
            if opclass.method != method or opclass.input_type != input_type:
                continue
            if ordering_operator is not None and opclass.ordering_operator == ordering_operator:
                return method, opclass
            if ordering_operator is None and opclass.ordering_operator is None and opclass.is_default:
                return method, opclass
    return None


def target_function_for(surface: TargetSurface, name: str) -> str | None:
    """The target function computing what a source function does, by the names known to match."""
    backward = tuple(source for source, targets in FUNCTION_CANDIDATES.items() if name in targets)
    candidates = (name, *FUNCTION_CANDIDATES.get(name, ()), *backward)
    return next((candidate for candidate in candidates if candidate in surface.functions), None)


def map_index(surface: TargetSurface, index: SavedIndex, target_type: TargetType) -> tuple[str, TargetOpclass]:
    """The target access method and operator class serving the same distance operator."""
    otherwise = surface.operator_otherwise(index.ordering_operator)
    if otherwise is not None:
        raise MappingError(
            Reason.UNMAPPED_INDEX,
            f"index {index.schema}.{index.name} serves {index.ordering_operator}, which {surface.extension} "
            f"computes otherwise ({otherwise}): its searches would return other rows ({FINDINGS})",
        )
    methods = target_methods(surface, index.method, index.method_owned_by_source)
    found = find_opclass(surface, methods, target_type.name, index.ordering_operator)
    if found is not None:
        return found
    operator = index.ordering_operator or "(no ordering operator)"
    raise MappingError(
        Reason.UNMAPPED_INDEX,
        f"index {index.schema}.{index.name} ({index.method}, {index.opclass}, operator {operator}) has no "
        f"counterpart in target extension {surface.extension} (methods: {', '.join(surface.methods) or 'none'})"
        + surface.failing_of_kind(index.method),
    )


def concurrent_build_bug(surface: TargetSurface, method: str) -> str | None:
    """Why CREATE INDEX CONCURRENTLY must not be used for this target method, if it must not."""
    return CONCURRENT_BUILD_KNOWN_BUGS.get((surface.extension, method_kind(method)))


def target_type_for(surface: TargetSurface, source_type: str) -> TargetType | None:
    """The target type of the same kind as a source type (vector, halfvec, sparsevec), if it has one."""
    by_name = {t.name: t for t in surface.types}
    return next((by_name[c] for c in _type_candidates(source_type) if c in by_name), None)
