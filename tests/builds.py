"""What a test does when a build it needs (the real RuVector, promtool, the control plane) is missing."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest


def missing_build(required_by: str, why: str) -> NoReturn:
    """Fail when ``required_by`` is set in the environment (as .ci/run sets it), else skip, saying why."""
    if os.environ.get(required_by):
        pytest.fail(f"{required_by} is set, but {why}")
    pytest.skip(why)


T = TypeVar("T")


def built(find: Callable[[], T], missing: type[Exception], required_by: str) -> T:
    """What ``find`` returns (a build's path or name); when it raises ``missing``, :func:`missing_build` says why."""
    try:
        return find()
    except missing as why:
        missing_build(required_by, str(why))
