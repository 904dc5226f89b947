"""The one writer of a VectorMigration's status: merge patches of the status subresource, with optimistic locking.

Every status write of the operator goes through a StatusWriter (a reconciliation's progress and its
end, the drift and clean-up timer), as CloudNativePG's PatchWithOptimisticLock: each patch carries
the resourceVersion the writer last read or wrote, so the API server refuses it (409 Conflict) when
the object changed since; the writer then reads the object again and writes once more. What it
writes is the engine's whole status (merge_patch_of: a cleared field is null), so writing it again
on the newer version loses nothing of its own, and a change someone else made is never overwritten
unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .client import KubeClient, KubeError

CONFLICT_ATTEMPTS = 5
log = logging.getLogger(__name__)


class StatusWriter:
    """Writes one VectorMigration's status, starting from the resourceVersion its caller read."""

    def __init__(self, client: KubeClient | None, namespace: str, name: str, resource_version: str | None) -> None:
        self.client, self.namespace, self.name = client, namespace, name
        self.resource_version = resource_version

    @classmethod
    def of(cls, client: KubeClient | None, body: Mapping[str, Any]) -> StatusWriter:
        """The writer of the object in ``body``, from the resourceVersion the body was read at."""
        meta = body.get("metadata") or {}
        return cls(client, str(meta.get("namespace") or ""), str(meta.get("name") or ""), meta.get("resourceVersion"))

    async def write(self, status: Mapping[str, Any]) -> None:
        """Patch the status; on a conflict, read the object's version and patch again (a KubeError after 5)."""
        if self.client is None:  # not logged in yet: nothing can be written, and nothing was done
            return
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                written = await self.client.patch_migration_status(
                    self.namespace, self.name, dict(status), self.resource_version
                )
            except KubeError as error:
                if error.status != 409:
                    raise
                current = await self.client.read_migration(self.namespace, self.name)
                if current is None:
                    raise KubeError(404, f"vectormigration {self.namespace}/{self.name} is gone") from None
                log.debug(
                    "status of %s/%s: the object changed since resourceVersion %s (409 Conflict); writing again on %s",
                    self.namespace, self.name, self.resource_version, current["metadata"]["resourceVersion"],
                )  # fmt: skip
                self.resource_version = current["metadata"]["resourceVersion"]
                continue
            self.resource_version = ((written or {}).get("metadata") or {}).get("resourceVersion")
            return
        raise KubeError(409, f"status of {self.namespace}/{self.name}: still conflicting after {CONFLICT_ATTEMPTS}")
