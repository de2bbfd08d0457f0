"""The security group: what npubox must never do (lose data, trust wrong data, open a hole), one test per
case found by a hostile try-out. Every test here carries the `security` marker: `pytest -m security`.
Destructive cases run against scratch folders; system folders are refused before any filesystem call."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "unit"
if str(UNIT) not in sys.path:
    sys.path.insert(0, str(UNIT))  # the shared fixtures of tests/unit (_convert_fixtures, ...)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(pytest.mark.security)
