"""The names Replicate gives what it creates: the new database, the old one, and the replication objects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ...api import VectorMigrationSpec
from ..parallel.names import OLD_SUFFIX, OURS, derived_name


@dataclass(frozen=True)
class ReplicaNames:
    """The three databases' names and the two replication channels' (publication, slot and subscription share one)."""

    source: str  # the application's database, named as the application reaches it
    target: str  # the new database, until the switchover gives it the source's name (same server)
    old: str  # what the source is called after the switchover (on another server: its own name)
    forward: str  # source -> new database, until the switchover
    back: str  # new database -> old one, from the switchover until keepOldFor has passed
    across_servers: bool = False  # the new database is on another server (replicate.target): no renames

    def marker(self, migration: str) -> str:
        """The new database's comment: whose it is (a re-run, a person and the switchover recognise it)."""
        return f"{OURS} {migration}: the Replicate copy of database {self.source}"


def replica_names(
    migration: str, spec: VectorMigrationSpec, source_database: str, *, across_servers: bool = False
) -> ReplicaNames:
    """The names for a migration of ``source_database``; replication names are [a-z0-9_] as slots require.

    Slots are named server-wide: the channel's name digests the database's name with the migration's,
    so the same migration applied to two databases of one server never shares (or drops) a slot.
    On another server the new database takes the source's name unless told otherwise, and the old
    one keeps its own.
    """
    channel = "vmig_" + hashlib.sha256(f"{source_database}\0{migration}".encode()).hexdigest()[:16]
    beside = derived_name(source_database, f"_{spec.target.extension}")
    return ReplicaNames(
        source=source_database,
        target=spec.replicate.target_database or (source_database if across_servers else beside),
        old=source_database if across_servers else derived_name(source_database, OLD_SUFFIX),
        forward=channel,
        back=f"{channel}_back",
        across_servers=across_servers,
    )
