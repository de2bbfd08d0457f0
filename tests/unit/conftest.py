"""What the unit and security tests share: the helper modules and the fixtures built on them.

The helpers are the ``_*.py`` modules of this folder, imported by their name from any test folder
(``from _pretrain_fixtures import write_dataset``): this folder goes first on ``sys.path`` here, and
tests/security/conftest.py loads this file for its own tests, so both find them the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

from _pretrain_fixtures import MODEL, write_dataset  # noqa: E402  (found through the line above)
from llm.workspace import Workspace  # noqa: E402


@pytest.fixture
def ws(tmp_path) -> Workspace:
    """A workspace holding the tiny model's pretraining dataset (30 documents) where `pretrain --model tiny` reads."""
    workspace = Workspace(tmp_path)
    write_dataset(workspace.text_dataset(MODEL), count=30)
    return workspace
