"""RuVector STAND-INS: SQL-only extensions that bind pgvector's C code under RuVector's names.

The real RuVector takes minutes to build (make ruvector) and needs PostgreSQL 17 or older; it is
proven in tests/test_real_ruvector.py. The demo and the fast suite, on PostgreSQL 18, migrate to
these instead. They are not RuVector: every function runs pgvector's C code
(``module_pathname = '$libdir/vector'``). What they reproduce faithfully is RuVector's SQL
*surface* -- the names a migration must discover and map -- in the three spellings that exist:

``ruvector_standin``
    the names RuVector's documentation publishes: type ``ruvector``, access methods ``ruhnsw``
    and ``ruivfflat``, operator classes ``ruvector_*_ops``, no casts (text route only).
``ruvector_script_standin``
    what RuVector 0.3.0's install script actually creates: type ``ruvector`` but the HNSW
    access method named ``hnsw``, which collides with pgvector's; no casts.
``ruvector_v2_standin``
    the v2 plan's pgvector-identical names (type ``vector``, ``hnsw``/``ivfflat``,
    ``vector_*_ops``), colliding on everything, with ``real[]`` casts.

Every stand-in says what it is: in its extension comment, in its version function and in the
``standin`` flag the engine reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STANDIN_VERSION = "0.3.0"
STANDIN_LABEL = "STAND-IN, not RuVector: pgvector's C code under RuVector's SQL names"


@dataclass(frozen=True)
class Surface:
    """One spelling of RuVector's SQL surface."""

    extension: str
    description: str
    type_name: str
    function_prefix: str
    hnsw_method: str
    ivfflat_method: str
    opclass_prefix: str
    array_casts: bool


PUBLISHED = Surface(
    extension="ruvector_standin",
    description="RuVector's documented names (ruhnsw, ruivfflat, ruvector_*_ops)",
    type_name="ruvector",
    function_prefix="ruvector_",
    hnsw_method="ruhnsw",
    ivfflat_method="ruivfflat",
    opclass_prefix="ruvector_",
    array_casts=False,
)
INSTALL_SCRIPT = Surface(
    extension="ruvector_script_standin",
    description="RuVector 0.3.0 install script's names (type ruvector, access method hnsw)",
    type_name="ruvector",
    function_prefix="ruvector_",
    hnsw_method="hnsw",
    ivfflat_method="ruivfflat",
    opclass_prefix="ruvector_",
    array_casts=False,
)
V2_PLAN = Surface(
    extension="ruvector_v2_standin",
    description="RuVector v2 plan's pgvector-identical names (vector, hnsw, ivfflat, vector_*_ops)",
    type_name="vector",
    function_prefix="ruvector_",
    hnsw_method="hnsw",
    ivfflat_method="ivfflat",
    opclass_prefix="vector_",
    array_casts=True,
)
SURFACES = {surface.extension: surface for surface in (PUBLISHED, INSTALL_SCRIPT, V2_PLAN)}


def render_control(surface: Surface) -> str:
    """The extension's control file."""
    return (
        f"comment = '{_sql_text(STANDIN_LABEL)}; surface: {_sql_text(surface.description)}'\n"
        f"default_version = '{STANDIN_VERSION}'\n"
        "module_pathname = '$libdir/vector'\n"
        "relocatable = true\n"
    )


# size: the stand-in's install script is one SQL template
def render_script(surface: Surface) -> str:
    """The extension's install script."""
    t = surface.type_name
    f = surface.function_prefix
    c_functions = {
        # our name: (pgvector's C symbol, signature, return type)
        "in": ("vector_in", "cstring, oid, integer", t),
        "out": ("vector_out", t, "cstring"),
        "typmod_in": ("vector_typmod_in", "cstring[]", "integer"),
        "recv": ("vector_recv", "internal, oid, integer", t),
        "send": ("vector_send", t, "bytea"),
        "l2_distance": ("l2_distance", f"{t}, {t}", "float8"),
        "cosine_distance": ("cosine_distance", f"{t}, {t}", "float8"),
        "l1_distance": ("l1_distance", f"{t}, {t}", "float8"),
        "negative_inner_product": ("vector_negative_inner_product", f"{t}, {t}", "float8"),
        "l2_squared_distance": ("vector_l2_squared_distance", f"{t}, {t}", "float8"),
        "spherical_distance": ("vector_spherical_distance", f"{t}, {t}", "float8"),
        "dims": ("vector_dims", t, "integer"),
        "norm": ("vector_norm", t, "float8"),
        "typmod": ("vector", f"{t}, integer, boolean", t),
    }
    io_functions = ("in", "out", "typmod_in", "recv", "send")

    def c_function(name: str) -> str:
        symbol, arguments, returns = c_functions[name]
        return (
            f"CREATE FUNCTION {f}{name}({arguments}) RETURNS {returns} "
            f"AS 'MODULE_PATHNAME', '{symbol}' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;"
        )

    lines = [
        f"-- {STANDIN_LABEL}.",
        f"-- Surface: {surface.description}.",
        f'\\echo Use "CREATE EXTENSION {surface.extension}" to load this file. \\quit',
        "",
        f"CREATE TYPE {t};",
        *(c_function(name) for name in io_functions),
        f"CREATE TYPE {t} (INPUT = {f}in, OUTPUT = {f}out, TYPMOD_IN = {f}typmod_in, "
        f"RECEIVE = {f}recv, SEND = {f}send, STORAGE = external);",
        *(c_function(name) for name in c_functions if name not in io_functions),
    ]
    lines += [
        # The identity cast with a length coercion function is what enforces ruvector(N)'s dims.
        f"CREATE CAST ({t} AS {t}) WITH FUNCTION {f}typmod({t}, integer, boolean) AS IMPLICIT;",
        f"CREATE FUNCTION {f}version() RETURNS text LANGUAGE sql IMMUTABLE "
        f"AS $$ SELECT '{STANDIN_VERSION} ({_sql_text(STANDIN_LABEL)})'::text $$;",
    ]
    if surface.array_casts:
        lines += [
            f"CREATE FUNCTION {f}to_float4({t}, integer, boolean) RETURNS real[] "
            "AS 'MODULE_PATHNAME', 'vector_to_float4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;",
            f"CREATE FUNCTION {f}from_float4(real[], integer, boolean) RETURNS {t} "
            "AS 'MODULE_PATHNAME', 'array_to_vector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;",
            f"CREATE CAST ({t} AS real[]) WITH FUNCTION {f}to_float4({t}, integer, boolean) AS IMPLICIT;",
            f"CREATE CAST (real[] AS {t}) WITH FUNCTION {f}from_float4(real[], integer, boolean) AS ASSIGNMENT;",
        ]
    for operator, function in (
        ("<->", "l2_distance"),
        ("<=>", "cosine_distance"),
        ("<#>", "negative_inner_product"),
        ("<+>", "l1_distance"),
    ):
        lines.append(
            f"CREATE OPERATOR {operator} (LEFTARG = {t}, RIGHTARG = {t}, "
            f"PROCEDURE = {f}{function}, COMMUTATOR = '{operator}');"
        )
    hnsw, ivfflat, o = surface.hnsw_method, surface.ivfflat_method, surface.opclass_prefix
    lines += [
        f"CREATE FUNCTION {f}hnsw_handler(internal) RETURNS index_am_handler "
        "AS 'MODULE_PATHNAME', 'hnswhandler' LANGUAGE C;",
        f"CREATE ACCESS METHOD {hnsw} TYPE INDEX HANDLER {f}hnsw_handler;",
        f"CREATE FUNCTION {f}ivfflat_handler(internal) RETURNS index_am_handler "
        "AS 'MODULE_PATHNAME', 'ivfflathandler' LANGUAGE C;",
        f"CREATE ACCESS METHOD {ivfflat} TYPE INDEX HANDLER {f}ivfflat_handler;",
        f"CREATE OPERATOR CLASS {o}l2_ops DEFAULT FOR TYPE {t} USING {hnsw} AS "
        f"OPERATOR 1 <-> ({t}, {t}) FOR ORDER BY float_ops, FUNCTION 1 {f}l2_squared_distance({t}, {t});",
        f"CREATE OPERATOR CLASS {o}ip_ops FOR TYPE {t} USING {hnsw} AS "
        f"OPERATOR 1 <#> ({t}, {t}) FOR ORDER BY float_ops, FUNCTION 1 {f}negative_inner_product({t}, {t});",
        f"CREATE OPERATOR CLASS {o}cosine_ops FOR TYPE {t} USING {hnsw} AS "
        f"OPERATOR 1 <=> ({t}, {t}) FOR ORDER BY float_ops, "
        f"FUNCTION 1 {f}negative_inner_product({t}, {t}), FUNCTION 2 {f}norm({t});",
        f"CREATE OPERATOR CLASS {o}l1_ops FOR TYPE {t} USING {hnsw} AS "
        f"OPERATOR 1 <+> ({t}, {t}) FOR ORDER BY float_ops, FUNCTION 1 {f}l1_distance({t}, {t});",
        f"CREATE OPERATOR CLASS {o}l2_ops DEFAULT FOR TYPE {t} USING {ivfflat} AS "
        f"OPERATOR 1 <-> ({t}, {t}) FOR ORDER BY float_ops, "
        f"FUNCTION 1 {f}l2_squared_distance({t}, {t}), FUNCTION 3 {f}l2_distance({t}, {t});",
        f"CREATE OPERATOR CLASS {o}ip_ops FOR TYPE {t} USING {ivfflat} AS "
        f"OPERATOR 1 <#> ({t}, {t}) FOR ORDER BY float_ops, "
        f"FUNCTION 1 {f}negative_inner_product({t}, {t}), FUNCTION 3 {f}spherical_distance({t}, {t}), "
        f"FUNCTION 4 {f}norm({t});",
        f"CREATE OPERATOR CLASS {o}cosine_ops FOR TYPE {t} USING {ivfflat} AS "
        f"OPERATOR 1 <=> ({t}, {t}) FOR ORDER BY float_ops, "
        f"FUNCTION 1 {f}negative_inner_product({t}, {t}), FUNCTION 2 {f}norm({t}), "
        f"FUNCTION 3 {f}spherical_distance({t}, {t}), FUNCTION 4 {f}norm({t});",
        "",
    ]
    return "\n".join(lines)


def _sql_text(text: str) -> str:
    """Double the quotes of a constant string placed inside a quoted literal."""
    return text.replace("'", "''")


def install(extension_dir: Path) -> list[str]:
    """Write every stand-in's control file and script into a PostgreSQL extension directory."""
    written = []
    for surface in SURFACES.values():
        (extension_dir / f"{surface.extension}.control").write_text(render_control(surface), encoding="utf-8")
        script = extension_dir / f"{surface.extension}--{STANDIN_VERSION}.sql"
        script.write_text(render_script(surface), encoding="utf-8")
        written.append(surface.extension)
    return written
