"""The whole suite: where the pinned upstream sources are, as archives named by commit (`<Name>-<commit>.tar.gz`).

CI and a checkout beside the project's `shared/` folder find them at ../shared/sources; elsewhere set
NPUBOX_SOURCE_CACHE to such a folder. Without it the tests that read the sources (marked `sources`, and the
twin's) are skipped with that reason, except in CI, where a missing folder stops the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = Path(os.environ.get("NPUBOX_SOURCE_CACHE") or REPO.parent / "shared" / "sources")


def pytest_collection_modifyitems(config, items):
    if SOURCES.is_dir():
        return
    needs = [item for item in items if item.get_closest_marker("sources") or item.get_closest_marker("twin")]
    if not needs:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI: the pinned source archives are not in {SOURCES}; set NPUBOX_SOURCE_CACHE")
    skip = pytest.mark.skip(
        reason=f"the pinned source archives are not in {SOURCES}: set NPUBOX_SOURCE_CACHE to a folder of "
        "<Name>-<commit>.tar.gz archives"
    )
    for item in needs:
        item.add_marker(skip)
