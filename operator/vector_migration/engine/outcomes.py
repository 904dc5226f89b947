"""What a phase returns: advance, wait and retry, hold for a person, or fail."""

from __future__ import annotations

from dataclasses import dataclass

from ..vocabulary import (
    Phase,
    Reason,
)


@dataclass(frozen=True)
class Advance:
    """Go on to the next phase."""

    phase: Phase
    message: str = ""


@dataclass(frozen=True)
class Wait:
    """A transient condition: retry the same phase after a delay."""

    reason: Reason
    message: str
    delay: float = 5.0


@dataclass(frozen=True)
class Hold:
    """Stop here without failing, until a person acts (approval, dry run)."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class Fail:
    """A terminal failure that needs a person; the message says what to do."""

    reason: Reason
    message: str


Outcome = Advance | Wait | Hold | Fail
