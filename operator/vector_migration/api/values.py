"""The API's values: durations and sizes in one grammar, names, and the models' common base."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic.alias_generators import to_camel

# One grammar for every duration: Kubernetes' and Go's (500ms, 90s, 10m, 1h30m, 24h) with
# PostgreSQL's units besides (10min, 7d); the parts add up. "0" is zero. A bare number is refused,
# because Kubernetes tools read it as seconds (Argo Rollouts) and PostgreSQL as milliseconds,
# except in lockTimeout and statementTimeout, which are PostgreSQL's own settings: there it is
# PostgreSQL's milliseconds, as it always was.
_DURATION_PART = r"[0-9]+(?:us|ms|min|s|m|h|d)"
_DURATION = rf"^(?:0|(?:{_DURATION_PART})+)$"
_PG_SETTING_DURATION = rf"^(?:[0-9]+|(?:{_DURATION_PART})+)$"
DURATION_GRAMMAR = "numbers with units, adding up: 500ms, 90s, 10m, 1h30m, 24h, 7d (us, ms, s, m or min, h, d)"
# Memory spellings accepted for maintenance_work_mem.
_MEMORY = r"^[0-9]+(kB|MB|GB|TB)$"
_DURATION_MS = {"us": 0.001, "ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_MEMORY_KB = {"kB": 1, "MB": 1 << 10, "GB": 1 << 20, "TB": 1 << 30}
PG_INT_MAX = (1 << 31) - 1  # PostgreSQL keeps lock_timeout, statement_timeout and maintenance_work_mem in an int


def duration_ms(duration: str) -> float:
    """A duration of the API's grammar in milliseconds (a bare number: PostgreSQL's milliseconds)."""
    if duration.isdigit():
        return int(duration)
    return sum(int(number) * _DURATION_MS[unit] for number, unit in re.findall(r"([0-9]+)([a-z]+)", duration))


def pg_setting_duration(duration: str) -> str:
    """A duration as PostgreSQL's settings take it: whole milliseconds (1h30m is 5400000)."""
    return str(round(duration_ms(duration)))


def _duration_grammar(pattern: str) -> BeforeValidator:
    """A duration of ``pattern``'s grammar, refused with the fix otherwise (a pattern alone says only its regex)."""

    def check(value: object) -> object:
        if isinstance(value, str) and not re.fullmatch(pattern, value):
            bare = " (a bare number has no unit here: 600 seconds is 600s, 10 minutes 10m)" if value.isdigit() else ""
            raise ValueError(f"{value!r} is not a duration{bare}; write {DURATION_GRAMMAR}")
        return value

    return BeforeValidator(check)


def _at_most_ms(limit: float, described: str) -> AfterValidator:
    """A duration no longer than ``limit`` ms."""

    def check(value: str | None) -> str | None:
        if value is not None and duration_ms(value) > limit:
            raise ValueError(f"at most {described}")
        return value

    return AfterValidator(check)


def _at_most_kb(value: str) -> str:
    number, unit = re.fullmatch(r"([0-9]+)([a-zA-Z]+)", value).groups()  # type: ignore[union-attr]
    if int(number) * _MEMORY_KB[unit] > PG_INT_MAX:
        raise ValueError("at most 2147483647kB (PostgreSQL's limit)")
    return value


_PG_DURATION = _at_most_ms(PG_INT_MAX, "2147483647ms, about 24 days (PostgreSQL's limit)")
_LONG_DURATION = _at_most_ms(3650 * 86_400_000, "3650d")

# Durations and sizes are short; a bound lets the API server price the CRD's CEL rule, which
# compares them, within its cost budget (an unbounded string costs as much as a 3 MB request).
_SETTING_LENGTH = 24

# A duration field: its grammar in the CRD's schema, which the API server checks, and in the
# models, which say the fix.
Duration = Annotated[
    str, Field(max_length=_SETTING_LENGTH, json_schema_extra={"pattern": _DURATION}), _duration_grammar(_DURATION)
]
PgSettingDuration = Annotated[
    str,
    Field(max_length=_SETTING_LENGTH, json_schema_extra={"pattern": _PG_SETTING_DURATION}),
    _duration_grammar(_PG_SETTING_DURATION),
]
# An index storage parameter value: a number or a bare word (on/off); never SQL.
_PARAMETER_VALUE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_PARAMETER_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# An extension's name as its control file spells it, and a version as ALTER EXTENSION takes it.
_EXTENSION_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_EXTENSION_VERSION = r"^[A-Za-z0-9_][A-Za-z0-9_.+~-]*$"


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields refused, values validated on assignment."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        # A field's docstring is its description: the CRD's, so `kubectl explain` shows it.
        use_attribute_docstrings=True,
    )


def split_qualified_name(name: str) -> list[str]:
    """Split 'schema.table' as PostgreSQL reads it.

    Unquoted parts fold to lower case; quoted parts keep their case and may hold dots (a doubled
    quote inside quotes is a literal quote).
    """
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    part_was_quoted = False
    index = 0
    while index < len(name):
        char = name[index]
        if char == '"':
            if quoted and index + 1 < len(name) and name[index + 1] == '"':
                current.append('"')
                index += 2
                continue
            quoted = not quoted
            part_was_quoted = True
        elif char == "." and not quoted:
            text = "".join(current)
            parts.append(text if part_was_quoted else text.lower())
            current, part_was_quoted = [], False
        else:
            current.append(char)
        index += 1
    if quoted:
        raise ValueError(f"unbalanced double quote in {name!r}")
    text = "".join(current)
    parts.append(text if part_was_quoted else text.lower())
    return parts
