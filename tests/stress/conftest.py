"""The stress runs are collected only when asked for (`make stress`): the default suite stays quick."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("VMIG_STRESS") == "1" else ["test_*.py"]
