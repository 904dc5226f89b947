"""What the stand-ins that run a Job's pod here (tests/cluster.py's JobRunner, tests/real_cluster/node.py) share."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def moved_into(
    declared: dict[str, str], volume: dict[str, Any], mount: dict[str, Any], directory: Path
) -> dict[str, str]:
    """The variables the pod declares that name this mount's path, or a file of its Secret, moved to ``directory``.

    Only those: a value that merely starts with a mount's path (PGHOST's socket under /tmp, say)
    means something else and is left alone.
    """
    path = mount["mountPath"]
    return {
        key: str(directory) + value.removeprefix(path)
        for key, value in declared.items()
        if value == path or ("secret" in volume and value.startswith(path + "/"))
    }
