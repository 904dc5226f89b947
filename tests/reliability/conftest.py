"""Write docs/reliability.md after the matrix ran, when asked (`make reliability`)."""

from __future__ import annotations

import os

import pytest

from tests.reliability.report import REPORT, render

WRITE_REPORT_ENV = "VMIG_WRITE_RELIABILITY_REPORT"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(WRITE_REPORT_ENV) == "1" and exitstatus == 0:
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(render())
