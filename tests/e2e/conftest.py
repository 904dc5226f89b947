"""The real-cluster suite runs only where Docker and kind do; elsewhere it skips with one line."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _missing() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker daemon is running"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e = [item for item in items if "tests/e2e/" in item.nodeid]
    if not e2e:
        return
    missing = _missing()
    for item in e2e:
        item.add_marker(pytest.mark.e2e)
        if missing is not None:
            item.add_marker(pytest.mark.skip(reason=f"real-cluster suite needs Docker and kind: {missing}"))
