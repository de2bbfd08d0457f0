"""The security group: what npubox must never do (lose data, trust wrong data, open a hole), one test per
case found by a hostile try-out. Every test here carries the `security` marker: `pytest -m security`.
Destructive cases run against scratch folders; system folders are refused before any filesystem call."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# tests/unit/conftest.py: the helper modules (_convert_fixtures, ...) on sys.path, and the shared fixtures.
_spec = importlib.util.spec_from_file_location(
    "unit_conftest", Path(__file__).resolve().parents[1] / "unit" / "conftest.py"
)
_unit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_unit)
ws = _unit.ws


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(pytest.mark.security)
