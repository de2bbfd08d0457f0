"""The repository passes its linter and formatter (ruff, configured in pyproject.toml): CI runs pytest, so this
test is how `ruff check` and `ruff format --check` run there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def ruff() -> str:
    """The ruff of the interpreter running the tests (the .venv's: `pip install -e '.[test]'`)."""
    path = Path(sys.executable).parent / "ruff"
    if path.is_file():
        return str(path)
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: install the test tools with `pip install -e '.[test]'`")
    return found


@pytest.mark.parametrize(
    "command", [["check", "--no-cache"], ["format", "--check", "--no-cache"]], ids=["check", "format"]
)
def test_ruff_finds_nothing(command):
    proc = subprocess.run([ruff(), *command, "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_would_notice_a_finding(tmp_path):
    # The same commands on a file with an unused import and a badly spaced call: both fail, so the checks can fail.
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nprint( 1 )\n")
    settings = ["--config", str(REPO / "pyproject.toml")]
    assert subprocess.run([ruff(), "check", "--no-cache", *settings, str(bad)], capture_output=True).returncode == 1
    check = subprocess.run([ruff(), "format", "--check", "--no-cache", *settings, str(bad)], capture_output=True)
    assert check.returncode == 1
