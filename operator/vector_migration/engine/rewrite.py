"""Functions re-created for the target: their type names rewritten through PostgreSQL's own parser.

A function or procedure whose signature, result or body names a source type (Supabase's
``match_documents(query_embedding vector(1536), …)``, a plpgsql helper casting to ``vector``)
is saved, dropped in the swap, and created again with every such type name replaced by the
target's. The definition is ``pg_get_functiondef``'s, parsed with pglast (libpg_query): the
signature and ``BEGIN ATOMIC`` bodies (which PostgreSQL keeps as trees and prints itself) are
rewritten as syntax trees and printed again. A body a person wrote as text keeps its text: a
``LANGUAGE sql`` body is parsed, and only the names the parser shows to be the source's types or
functions are replaced, where they stand, so its comments and layout stay; plpgsql bodies, which
libpg_query parses but cannot print, are rewritten on the tokens of PostgreSQL's own scanner, only
where a token is a type by its place (after ``::``, after ``AS`` in a ``CAST``, or as a declared
variable's type). A source type name left anywhere else in a body is not guessed at: the function
is refused, named, before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pglast import ast, parse_sql, visitors
from pglast.enums import FunctionParameterMode
from pglast.parser import ParseError, Token, scan
from pglast.stream import RawStream

from ..database.sql import qualify, quote_ident, quote_literal

# Scanner token names (libpg_query's) that decide whether an identifier is a type by its place.
_TYPECAST, _AS, _IDENT = "TYPECAST", "AS", "IDENT"
_DECLARE = "DECLARE"
_DECLARATION_ENDS = {"ASCII_59", "ASCII_40", "ASCII_91", "COLON_EQUALS", "DEFAULT", "NOT", "ASCII_61"}  # ; ( [ := …


_Statement = TypeVar("_Statement", bound=ast.Node)


class RewriteError(ValueError):
    """A definition that cannot be carried safely; the message says where and what to do."""


@dataclass(frozen=True)
class RewrittenFunction:
    """A function's definition for the target, and its signature as ALTER/GRANT/COMMENT name it."""

    definition: str
    signature: str


def rewrite_function(
    definition: str,
    type_map: dict[str, tuple[str, str]],
    source_schema: str,
    names: NameMap | None = None,
    target: str = "the target",
) -> RewrittenFunction:
    """``definition`` (pg_get_functiondef) with every source type name replaced by ``type_map``'s target.

    ``type_map`` maps a source type's name to the target type's (schema, name); a type name counts
    as the source's when it is unqualified or qualified with ``source_schema``. With ``names``, the
    source's functions called in an SQL body (``l2_distance(…)``) become the target's too, and one
    the target lacks is refused.
    """
    statement = _parsed(definition, ast.CreateFunctionStmt, "a CREATE FUNCTION")
    retype = _Retype(type_map, source_schema)
    for parameter in statement.parameters or ():
        retype(parameter)
    if statement.returnType is not None:
        retype(statement.returnType)
    language = _option(statement, "language")
    body_visitor = _Remap(names) if names is not None else retype
    if statement.sql_body is not None:
        body_visitor(statement.sql_body)
    else:
        body = _option(statement, "as")
        if body is not None:
            _set_body(statement, _rewrite_body(body, language, type_map, source_schema, body_visitor))
    if isinstance(body_visitor, _Remap):
        body_visitor.check(target)
    return RewrittenFunction(str(RawStream()(statement)), _signature(statement))


def _parsed(definition: str, kind: type[_Statement], what: str) -> _Statement:
    """The one statement of a catalog definition (pg_get_*def's), of the kind expected."""
    try:
        statement = parse_sql(definition)[0].stmt
    except ParseError as error:
        raise RewriteError(f"its definition cannot be parsed ({error})") from None
    if not isinstance(statement, kind):
        raise RewriteError(f"its definition is not {what}")
    return statement


class _Retype(visitors.Visitor):
    def __init__(self, type_map: dict[str, tuple[str, str]], source_schema: str) -> None:
        self.type_map, self.source_schema = type_map, source_schema
        # (location, parts of the name there, what it becomes): each name changed, to edit a text in place
        self.edits: list[tuple[int | None, int, str]] = []

    def _is_source(self, names: list[str]) -> bool:
        """Whether a name is the source's: unqualified, or qualified with the source's schema."""
        return len(names) == 1 or names[-2] == self.source_schema

    def _names_the_same(self, names: list[str], schema: str, name: str) -> bool:
        """Whether ``names`` (the source's) already reaches the target's ``schema.name``: nothing to change.

        So on a target whose names equal pgvector's (the v2 plan's), a person's text is left as it is.
        """
        return names[-1] == name and schema == (names[-2] if len(names) > 1 else self.source_schema)

    def visit_TypeName(self, _ancestors: object, node: ast.TypeName) -> None:
        names = [name.sval for name in node.names or ()]
        if names[-1] in self.type_map and self._is_source(names):
            schema, name = self.type_map[names[-1]]
            if self._names_the_same(names, schema, name):
                return
            node.names = (ast.String(sval=schema), ast.String(sval=name))
            self.edits.append((node.location, len(names), qualify(schema, name)))


@dataclass(frozen=True)
class NameMap:
    """What the source's names become on the target, and which source names have no counterpart there."""

    types: dict[str, tuple[str, str]]  # source type name -> target (schema, name)
    functions: dict[str, tuple[str, str]]  # source function name -> target (schema, name)
    source_schema: str
    source_types: frozenset[str]
    source_functions: frozenset[str]


class _Remap(_Retype):
    """Types and function calls renamed for the target; source names it has nothing for are collected."""

    def __init__(self, names: NameMap) -> None:
        super().__init__(names.types, names.source_schema)
        self.names = names
        self.missing: set[str] = set()

    def visit_TypeName(self, ancestors: object, node: ast.TypeName) -> None:
        names = [name.sval for name in node.names or ()]
        if self._is_source(names) and names[-1] in self.names.source_types and names[-1] not in self.type_map:
            self.missing.add(f"type {names[-1]}")
        super().visit_TypeName(ancestors, node)

    def visit_FuncCall(self, _ancestors: object, node: ast.FuncCall) -> None:
        names = [name.sval for name in node.funcname or ()]
        if not self._is_source(names):
            return
        if names[-1] in self.names.functions:
            schema, name = self.names.functions[names[-1]]
            if self._names_the_same(names, schema, name):
                return
            node.funcname = (ast.String(sval=schema), ast.String(sval=name))
            self.edits.append((node.location, len(names), qualify(schema, name)))
        elif names[-1] in self.names.source_functions:
            self.missing.add(f"function {names[-1]}")

    def check(self, target: str) -> None:
        if self.missing:
            raise RewriteError(f"it uses {', '.join(sorted(self.missing))}, which {target} does not offer")


def _remapped(node: ast.Node, names: NameMap, target: str) -> None:
    """``node``'s types and function calls renamed for the target; refused if it needs one the target lacks."""
    remap = _Remap(names)
    remap(node)
    remap.check(target)


def rewrite_index(
    definition: str, names: NameMap, method: str, opclasses: list[tuple[str, str] | None], target: str
) -> str:
    """A CREATE INDEX (pg_get_indexdef's) for the target: its method, key classes, types and functions.

    ``opclasses`` gives each key's target class, or None to keep the key's own (a built-in class).
    """
    statement = _parsed(definition, ast.IndexStmt, "a CREATE INDEX")
    statement.accessMethod = method
    for element, opclass in zip(statement.indexParams or (), opclasses, strict=False):
        if opclass is not None:
            element.opclass = tuple(ast.String(sval=part) for part in opclass)
    _remapped(statement, names, target)
    return str(RawStream()(statement))


def index_name(definition: str) -> str:
    """The name a CREATE INDEX (pg_get_indexdef's) gives its index."""
    return str(_parsed(definition, ast.IndexStmt, "a CREATE INDEX").idxname)


def built_concurrently(definition: str) -> tuple[str, str]:
    """A CREATE INDEX as CREATE INDEX CONCURRENTLY, and its access method."""
    statement = _parsed(definition, ast.IndexStmt, "a CREATE INDEX")
    statement.concurrent = True
    return str(RawStream()(statement)), str(statement.accessMethod)


def retarget_index(definition: str, relation: str, name: str) -> str:
    """The same CREATE INDEX on another relation of the same schema, under another name.

    Parallel builds a materialized view's indexes on its replacement before the names change hands.
    """
    statement = _parsed(definition, ast.IndexStmt, "a CREATE INDEX")
    if statement.relation is None:
        raise RewriteError("its definition names no relation")
    statement.idxname = name
    statement.relation.relname = relation
    return str(RawStream()(statement))


def rewrite_check(definition: str, names: NameMap, target: str) -> str:
    """A CHECK constraint's definition (pg_get_constraintdef's) with its types and functions the target's."""
    try:
        statement = parse_sql(f"ALTER TABLE vmig_placeholder ADD {definition}")[0].stmt
    except ParseError as error:
        raise RewriteError(f"its definition cannot be parsed ({error})") from None
    if statement is None:
        raise RewriteError("its definition is empty")
    _remapped(statement, names, target)
    printed = str(RawStream()(statement))
    return printed.removeprefix("ALTER TABLE vmig_placeholder ADD ")


def rewrite_view(query: str, names: NameMap, target: str) -> str:
    """A view's query (pg_get_viewdef's) with its types and functions the target's."""
    statement = _parsed(query, ast.SelectStmt, "a query")
    _remapped(statement, names, target)
    return str(RawStream()(statement))


def rewrite_condition(expression: str, names: NameMap, target: str) -> str:
    """A partial index's predicate (pg_get_expr's) with its types and functions the target's."""
    try:
        statement = parse_sql(f"SELECT WHERE {expression}")[0].stmt
    except ParseError as error:
        raise RewriteError(f"its predicate cannot be parsed ({error})") from None
    if not isinstance(statement, ast.SelectStmt) or statement.whereClause is None:
        raise RewriteError("its predicate is not a single expression")
    _remapped(statement, names, target)
    return str(RawStream()(statement.whereClause))


class _Names(visitors.Visitor):
    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_TypeName(self, _ancestors: object, node: ast.TypeName) -> None:
        if node.names:
            self.found.add(str(node.names[-1].sval))

    def visit_FuncCall(self, _ancestors: object, node: ast.FuncCall) -> None:
        if node.funcname:
            self.found.add(str(node.funcname[-1].sval))


def type_and_function_names(sql: str) -> set[str]:
    """Every type and function a statement names (the last part of each name)."""
    try:
        statements = parse_sql(sql)
    except ParseError as error:
        raise RewriteError(f"its definition cannot be parsed ({error})") from None
    names = _Names()
    for raw in statements:
        if raw.stmt is not None:
            names(raw.stmt)
    return names.found


def rewrite_expression(expression: str, type_map: dict[str, tuple[str, str]], source_schema: str) -> str:
    """An expression (a column default, pg_get_expr's) with every source type name replaced."""
    try:
        statement = parse_sql(f"SELECT {expression}")[0].stmt
    except ParseError as error:
        raise RewriteError(f"its expression cannot be parsed ({error})") from None
    if not isinstance(statement, ast.SelectStmt) or not statement.targetList or len(statement.targetList) != 1:
        raise RewriteError("its expression is not a single expression")
    _Retype(type_map, source_schema)(statement)
    return str(RawStream()(statement.targetList[0].val))


def _option(statement: ast.CreateFunctionStmt, name: str) -> str | None:
    for option in statement.options or ():
        if option.defname == name:
            value = option.arg[0] if isinstance(option.arg, tuple) else option.arg
            return str(value.sval)
    return None


def _set_body(statement: ast.CreateFunctionStmt, body: str) -> None:
    for option in statement.options or ():
        if option.defname == "as":
            option.arg = (ast.String(sval=body),)


def _rewrite_body(
    body: str, language: str | None, type_map: dict[str, tuple[str, str]], source_schema: str, visitor: _Retype
) -> str:
    if language == "sql":
        try:
            statements = parse_sql(body)
        except ParseError as error:
            raise RewriteError(f"its SQL body cannot be parsed ({error})") from None
        visitor.edits = []
        for raw in statements:
            if raw.stmt is not None:
                visitor(raw.stmt)
        return edited_in_place(body, visitor.edits)
    if language == "plpgsql":
        return _rewrite_plpgsql(body, type_map, source_schema, visitor if isinstance(visitor, _Remap) else None)
    if any(_is_type_token(body, token, type_map) for token in _tokens(body)):
        raise RewriteError(f"its {language} body names a vector type, and {language} bodies are not rewritten")
    return body


_NAME_TOKENS = frozenset({"IDENT", "UNRESERVED_KEYWORD", "COL_NAME_KEYWORD", "TYPE_FUNC_NAME_KEYWORD"})


def edited_in_place(text: str, edits: list[tuple[int | None, int, str]]) -> str:
    """``text`` with each name the parser located replaced where it stands, and nothing else touched.

    Each edit is (location, parts, replacement): the (possibly qualified) name of ``parts`` parts
    that starts at ``location`` becomes ``replacement``. Comments, layout and every other token stay
    as the person wrote them. A location where the scanner finds no such name is refused, never guessed.
    """
    tokens = _tokens(text)
    starting = {token.start: position for position, token in enumerate(tokens)}
    spans = []
    for location, parts, replacement in edits:
        position = None if location is None else starting.get(location)
        if location is None or position is None:
            raise RewriteError(f"its body has no name at character {(location or 0) + 1} to rewrite")
        last = position + 2 * (parts - 1)
        shape = [t.name == "ASCII_46" if i % 2 else t.kind in _NAME_TOKENS or t.name == "IDENT"
                 for i, t in enumerate(tokens[position : last + 1])]  # fmt: skip
        if len(shape) != 2 * parts - 1 or not all(shape):
            raise RewriteError(f"its body's name at character {location + 1} is not where the parser put it")
        spans.append((location, tokens[last].end, replacement))
    for start, end, replacement in sorted(set(spans), reverse=True):
        text = text[:start] + replacement + text[end + 1 :]
    return text


def operators_written(sql: str) -> set[str]:
    """The operators ``sql`` uses, as the scanner reads them: never one inside a comment or a string."""
    return {sql[token.start : token.end + 1] for token in _tokens(sql) if token.name == "Op"}


def function_operators(definition: str) -> set[str]:
    """The operators a function's definition uses: in its signature, a BEGIN ATOMIC body, or its quoted body."""
    found = operators_written(definition)
    body = _option(_parsed(definition, ast.CreateFunctionStmt, "a CREATE FUNCTION"), "as")
    return found | operators_written(body) if body is not None else found


def _tokens(text: str) -> list[Token]:
    try:
        return list(scan(text))
    except ParseError as error:
        raise RewriteError(f"its body cannot be scanned ({error})") from None


def _word(text: str, token: Token) -> str:
    return text[token.start : token.end + 1].strip('"')


def _is_type_token(text: str, token: Token, type_map: dict[str, tuple[str, str]]) -> bool:
    return token.name == _IDENT and _word(text, token) in type_map


def _rewrite_plpgsql(
    body: str, type_map: dict[str, tuple[str, str]], source_schema: str, remap: _Remap | None = None
) -> str:
    """Replace source type names where the scanner shows them to be types; refuse any other mention.

    With ``remap``, a call of a source function (a name the scanner shows followed by "(") becomes
    a call of the target's; one the target lacks is collected for ``remap.check``.
    """
    tokens = _tokens(body)
    replacements: list[tuple[int, int, str]] = []
    in_declare = False
    for position, token in enumerate(tokens):
        name = token.name
        if name == _DECLARE:
            in_declare = True
        elif name == "BEGIN_P":
            in_declare = False
        following = tokens[position + 1].name if position + 1 < len(tokens) else None
        # vector(3) is a type with a modifier (pgvector also has a function of that name)
        is_call = token.name == _IDENT and following == "ASCII_40" and _word(body, token) not in type_map
        if remap is not None and is_call:
            call = _function_call(body, tokens, position, remap)
            if call is not None:
                replacements.append(call)
            continue
        if not _is_type_token(body, token, type_map):
            continue
        start, end = token.start, token.end
        previous = [t.name for t in tokens[max(0, position - 3) : position]]
        qualified = (
            len(previous) >= 2 and previous[-1] == "ASCII_46" and _word(body, tokens[position - 2]) == source_schema
        )
        if qualified:
            start = tokens[position - 2].start
            previous = previous[:-2]
        after_cast = bool(previous) and previous[-1] in (_TYPECAST, _AS)
        declared = in_declare and bool(previous) and previous[-1] == _IDENT and following in _DECLARATION_ENDS
        if not (after_cast or declared):
            raise RewriteError(
                f"its plpgsql body names {_word(body, token)} at character {token.start + 1} "
                "where it is not plainly a type (a cast or a declaration); qualify or cast it there, or drop the "
                "function before migrating and create it for the target afterwards"
            )
        schema, name = type_map[_word(body, token)]
        if (schema, name) != (source_schema, _word(body, token)):  # else it names the target already
            replacements.append((start, end, qualify(schema, name)))
    for start, end, replacement in sorted(replacements, reverse=True):
        body = body[:start] + replacement + body[end + 1 :]
    return body


def _function_call(body: str, tokens: list[Token], position: int, remap: _Remap) -> tuple[int, int, str] | None:
    """The replacement for a call of one of the source's functions in a plpgsql body, if it is one."""
    token, word = tokens[position], _word(body, tokens[position])
    start = token.start
    if position >= 2 and tokens[position - 1].name == "ASCII_46":  # schema.function(
        if _word(body, tokens[position - 2]) != remap.names.source_schema:
            return None  # another schema's function of the same name
        start = tokens[position - 2].start
    if word in remap.names.functions:
        return start, token.end, qualify(*remap.names.functions[word])
    if word in remap.names.source_functions:
        remap.missing.add(f"function {word}")
    return None


def _signature(statement: ast.CreateFunctionStmt) -> str:
    """schema.name(argument types) of the new function, as DROP/ALTER/GRANT/COMMENT name it."""
    name = ".".join(quote_ident(part.sval) for part in statement.funcname or ())
    inputs = [
        str(RawStream()(parameter.argType))
        for parameter in statement.parameters or ()
        if parameter.mode not in (FunctionParameterMode.FUNC_PARAM_OUT, FunctionParameterMode.FUNC_PARAM_TABLE)
    ]
    return f"{name}({', '.join(inputs)})"


def setting_value_sql(guc: str, value: str) -> str:
    """A stored setting's value as SQL: a list (search_path's "$user", public) stays a list of literals.

    The catalog keeps a list setting as its elements, quoted where needed; one string literal of
    that text would become one element. The value is parsed (never pasted) and only constants pass.
    """
    try:
        parsed = parse_sql(f"SET {guc} TO {value}")
    except ParseError:
        return quote_literal(value)
    statement = parsed[0].stmt if len(parsed) == 1 else None
    if not isinstance(statement, ast.VariableSetStmt) or not statement.args:
        return quote_literal(value)
    if not all(isinstance(arg, ast.A_Const) for arg in statement.args):
        return quote_literal(value)
    return ", ".join(RawStream()(arg) for arg in statement.args)
