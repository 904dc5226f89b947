"""Every example manifest in the repository is valid."""

from pathlib import Path

import pytest

from vector_migration.api import load_manifest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_manifests_are_valid(path: Path) -> None:
    assert load_manifest(path).metadata.name
