"""What the target extension owns that a migration maps onto: its base types and operator classes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TargetType:
    """A base type the target owns."""

    oid: int
    schema: str
    name: str
    has_typmod: bool


@dataclass(frozen=True)
class TargetOpclass:
    """An operator class the target owns."""

    schema: str
    name: str
    method: str
    input_type: str  # type name: surfaces probed in a scratch database have other oids
    ordering_operator: str | None
    is_default: bool
