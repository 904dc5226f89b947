"""What a test does when a build it needs (the real RuVector, promtool, the control plane) is missing."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing_build(required_by: str, why: str) -> NoReturn:
    """Fail when ``required_by`` is set in the environment (as .ci/run sets it), else skip, saying why."""
    if os.environ.get(required_by):
        pytest.fail(f"{required_by} is set, but {why}")
    pytest.skip(why)
