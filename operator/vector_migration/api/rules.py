"""The rules across a spec's fields, each defined once: its message, its CEL for the API server, its check here.

The API server evaluates the CEL on the stored object (defaults applied, unset fields absent); the
models run the Python check on the same JSON shape, so ``kubectl apply`` and the command line
refuse the same specs with the same message (tests/test_crd_rules.py checks the two agree on every
combination of the fields they read). A CEL rule reads a field only behind has(): the API server
also evaluates it against the schema's default ({}), where nothing inside is defaulted yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Spec = Mapping[str, Any]  # a spec (or one of its sections) as JSON, camelCase


@dataclass(frozen=True)
class CrossFieldRule:
    """One rule: what it says when broken, where, its CEL (true when kept), and its check (true when broken)."""

    message: str
    field_path: str
    cel: str
    broken: Callable[[Spec], bool]

    def as_validation(self) -> dict[str, str]:
        """The CRD's x-kubernetes-validations entry."""
        return {"rule": self.cel, "message": self.message, "fieldPath": self.field_path}


def _strategy(spec: Spec) -> str:
    return str(spec.get("strategy") or "InPlace")


def _section(spec: Spec, name: str) -> Spec:
    section = spec.get(name)
    return section if isinstance(section, Mapping) else {}


# Rebuild empties each table inside its transaction; a verified dump is the second copy it insists on.
REBUILD_NEEDS_BACKUP = "strategy Rebuild requires backup.enabled: true (a verified dump before tables are emptied)"
# Only Rebuild re-creates the tables; InPlace and Parallel keep each column's kind of type.
COLUMN_TYPES_NEED_REBUILD = "rebuild.columnTypes requires strategy: Rebuild (columnTypes serves every strategy)"
COLUMN_TYPES_TWICE = "give columnTypes or rebuild.columnTypes (its older spelling), not both"
# Only Replicate makes a new database, and so only it can make one on another server.
TARGET_SERVER_NEEDS_REPLICATE = "replicate.target requires strategy: Replicate"
# Only InPlace converts tables where they are in transactions of its own choosing.
BATCHES_NEED_IN_PLACE = "inPlace.tablesPerBatch requires strategy: InPlace"
# On another server the old database is the source itself, where the migration's journal is.
DROP_OLD_ACROSS_SERVERS = (
    "replicate.dropOld applies on the same server; with replicate.target, drop the old one yourself"
)

SPEC_RULES = (
    CrossFieldRule(
        REBUILD_NEEDS_BACKUP,
        ".backup.enabled",
        "!has(self.strategy) || self.strategy != 'Rebuild' || !has(self.backup)"
        " || !has(self.backup.enabled) || self.backup.enabled",
        lambda s: _strategy(s) == "Rebuild" and _section(s, "backup").get("enabled") is False,
    ),
    CrossFieldRule(
        COLUMN_TYPES_NEED_REBUILD,
        ".rebuild.columnTypes",
        "(has(self.strategy) && self.strategy == 'Rebuild') || !has(self.rebuild)"
        " || !has(self.rebuild.columnTypes) || size(self.rebuild.columnTypes) == 0",
        lambda s: _strategy(s) != "Rebuild" and bool(_section(s, "rebuild").get("columnTypes")),
    ),
    CrossFieldRule(
        COLUMN_TYPES_TWICE,
        ".columnTypes",
        "!has(self.columnTypes) || size(self.columnTypes) == 0 || !has(self.rebuild)"
        " || !has(self.rebuild.columnTypes) || size(self.rebuild.columnTypes) == 0",
        lambda s: bool(s.get("columnTypes")) and bool(_section(s, "rebuild").get("columnTypes")),
    ),
    CrossFieldRule(
        TARGET_SERVER_NEEDS_REPLICATE,
        ".replicate.target",
        "(has(self.strategy) && self.strategy == 'Replicate') || !has(self.replicate) || !has(self.replicate.target)",
        lambda s: _strategy(s) != "Replicate" and _section(s, "replicate").get("target") is not None,
    ),
    CrossFieldRule(
        BATCHES_NEED_IN_PLACE,
        ".inPlace.tablesPerBatch",
        "!has(self.strategy) || self.strategy == 'InPlace' || !has(self.inPlace) || !has(self.inPlace.tablesPerBatch)",
        lambda s: _strategy(s) != "InPlace" and _section(s, "inPlace").get("tablesPerBatch") is not None,
    ),
)

# spec.replicate's own.
REPLICATE_RULES = (
    CrossFieldRule(
        DROP_OLD_ACROSS_SERVERS,
        ".dropOld",
        "!has(self.target) || !has(self.dropOld) || !self.dropOld",
        lambda r: r.get("target") is not None and r.get("dropOld") is True,
    ),
)


def cel_rules(rules: Iterable[CrossFieldRule]) -> dict[str, Any]:
    """A model's json_schema_extra: its rules as the CRD's x-kubernetes-validations."""
    return {"x-kubernetes-validations": [rule.as_validation() for rule in rules]}


def broken_rule(rules: Iterable[CrossFieldRule], document: Spec) -> str | None:
    """The message of the first rule the document breaks, or None."""
    return next((rule.message for rule in rules if rule.broken(document)), None)
