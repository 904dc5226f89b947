"""Two readings of the catalog compared, translated by what a plan changes: anything else is a difference.

``compare`` checks the reading after a change against the one before it, translated by what the
plan changes (:class:`Expected`, data a journal can keep). Anything else that differs is a
:class:`Difference`, named by object and attribute: the migration fails and its transaction rolls
back. A function's source may be allowed to differ in its names only, read on PostgreSQL's scanner.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog_state import CatalogObject, CatalogState

TYPE_ATTRIBUTES = frozenset({"type", "result", "base"})

# A change a plan may make to a function's source: its names only (a type's, a function's), where they
# stand; its comments, layout, literals and every other token as the person wrote them.
SOURCE_NAMES = "names in its source"


@dataclass(frozen=True)
class Expected:
    """What the plan changes, so the reading after can be told from the one before translated by it.

    ``types`` maps a type reference to the one it becomes everywhere (functions' arguments and
    results, domains); ``column_types`` names each converted column's new type. ``changes`` lists the
    attributes the plan changes per object (after translation), ``"*"`` for every attribute;
    ``added`` and ``removed`` the objects the plan creates or drops, each with why. ``own`` are the
    relations the migration itself made (a shadow, a table kept aside): they and what belongs to
    them are not the application's.
    """

    types: Mapping[str, str] = field(default_factory=dict)
    column_types: Mapping[str, str] = field(default_factory=dict)
    changes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    added: Mapping[str, str] = field(default_factory=dict)
    removed: Mapping[str, str] = field(default_factory=dict)
    own: frozenset[str] = frozenset()
    # attributes set after the comparison, on every object (Replicate's sequences get their values
    # under the switchover's block, after its proof)
    settled_later: frozenset[str] = frozenset()

    def as_document(self) -> dict[str, Any]:
        """As a journal keeps it (Replicate compares its two databases with it at the switchover)."""
        return {
            "types": dict(self.types),
            "columnTypes": dict(self.column_types),
            "changes": {key: sorted(names) for key, names in self.changes.items()},
            "added": dict(self.added),
            "removed": dict(self.removed),
            "own": sorted(self.own),
            "settledLater": sorted(self.settled_later),
        }

    @classmethod
    def of_document(cls, document: Mapping[str, Any]) -> Expected:
        """What as_document wrote."""
        return cls(
            types=dict(document.get("types", {})),
            column_types=dict(document.get("columnTypes", {})),
            changes={key: frozenset(names) for key, names in document.get("changes", {}).items()},
            added=dict(document.get("added", {})),
            removed=dict(document.get("removed", {})),
            own=frozenset(document.get("own", [])),
            settled_later=frozenset(document.get("settledLater", [])),
        )

    def owning(self, *names: str) -> Expected:
        """The same, with more relations or publications the migration's own."""
        return dataclasses.replace(self, own=self.own | frozenset(names))


@dataclass(frozen=True)
class Difference:
    """One thing the change did that its plan does not say."""

    key: str
    what: str

    def __str__(self) -> str:
        return f"{self.key}: {self.what}"


@dataclass(frozen=True)
class Comparison:
    """What the comparison found: objects equal, objects changed as planned, and what differs besides."""

    equal: int
    planned: int
    differences: tuple[Difference, ...]

    @property
    def summary(self) -> str:
        """``412 catalog objects equal; 14 changed as planned``."""
        return f"{self.equal} catalog objects equal; {self.planned} changed as planned"


def translated(found: CatalogObject, expected: Expected) -> CatalogObject:
    """An object of the reading before, as the plan would leave it: its type references translated."""
    types = expected.types
    parts = found.parts
    if found.kind == "function":
        parts = (parts[0], parts[1], [types.get(t, t) for t in parts[2] or []])
    attributes = dict(found.attributes)
    for name in TYPE_ATTRIBUTES & attributes.keys():
        value = attributes[name]
        attributes[name] = types.get(value, value) if isinstance(value, str) else value
    if found.kind == "column":
        attributes["type"] = expected.column_types.get(found.key, attributes["type"])
    return CatalogObject(found.kind, parts, attributes)


def compare(before: CatalogState, after: CatalogState, expected: Expected) -> Comparison:
    """Every difference between the two readings that the plan does not account for."""
    was: dict[str, CatalogObject] = {}
    retyped: set[str] = set()  # objects whose type references the plan changes: changed as planned
    for found in before.objects.values():
        if found.is_own(expected.own):
            continue
        moved = translated(found, expected)
        was[moved.key] = moved
        if moved != found:
            retyped.add(moved.key)
    now = {key: found for key, found in after.objects.items() if not found.is_own(expected.own)}
    differences: list[Difference] = []
    equal = planned = 0
    for key in sorted(was.keys() | now.keys()):
        old, new = was.get(key), now.get(key)
        if new is None:
            if key in expected.removed:
                planned += 1
            else:
                differences.append(Difference(key, "is gone"))
            continue
        if old is None:
            if key in expected.added:
                planned += 1
            else:
                differences.append(Difference(key, "was not there before"))
            continue
        allowed = expected.changes.get(key) or expected.changes.get(new.family, frozenset())
        changed = [
            name
            for name in sorted(old.attributes.keys() | new.attributes.keys())
            if name not in expected.settled_later
            and not _same(name, old.attributes.get(name), new.attributes.get(name))
        ]
        unplanned = [
            name
            for name in changed
            if "*" not in allowed
            and name not in allowed
            and not (name == "source" and SOURCE_NAMES in allowed and only_names_differ(old, new))
        ]
        if unplanned:
            differences += [
                Difference(key, f"{name} was {_shown(old.attributes.get(name))}, is {_shown(new.attributes.get(name))}")
                for name in unplanned
            ]
        elif changed or key in retyped:
            planned += 1
        else:
            equal += 1
    return Comparison(equal, planned, tuple(differences))


def only_names_differ(old: CatalogObject, new: CatalogObject) -> bool:
    """Whether two function sources differ in their (possibly qualified) names alone.

    Each source is read by PostgreSQL's scanner (pglast): the text between and around its name
    tokens (comments, white space, keywords, literals, operators) must be the same, character for
    character; only runs of identifiers and the dots between them may differ.
    """
    before, after = old.attributes.get("source"), new.attributes.get("source")
    if not isinstance(before, str) or not isinstance(after, str):
        return False
    try:
        return _without_names(before) == _without_names(after)
    except ValueError:
        return False


def _without_names(source: str) -> list[str]:
    """The source cut at its names: the text around each run of identifiers and dots, in order."""
    # Imported here: the parser costs the operator ~4 MB of memory (bench/), needed only for a body.
    from pglast.parser import ParseError, scan

    try:
        tokens = list(scan(source))
    except ParseError as error:
        raise ValueError(str(error)) from None
    pieces, cursor, in_name = [], 0, False
    for token in tokens:
        is_name = token.name in {"IDENT", "ASCII_46"}
        if is_name and not in_name:
            pieces.append(source[cursor : token.start])
        if is_name:
            cursor = token.end + 1
        in_name = is_name
    pieces.append(source[cursor:])
    return pieces


_TYPES_STORAGE = "the type's"


def _same(name: str, old: Any, new: Any) -> bool:
    """Equal, with two allowances that change nothing a person set.

    A sequence may have moved on (never back) while the change ran. A column's storage follows its
    type's unless a person set it (``SET STORAGE``): the type's before and the new type's after is
    no change, and one set by a person that happens to be the new type's own is kept.
    """
    if name == "last value" and isinstance(old, int) and isinstance(new, int):
        return new >= old
    if name == "storage" and isinstance(old, str) and isinstance(new, str):
        followed = old.startswith(_TYPES_STORAGE) and new.startswith(_TYPES_STORAGE)
        return old == new or followed or new == f"{_TYPES_STORAGE} ({old})"
    return bool(old == new)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
