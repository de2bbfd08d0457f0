"""Two builds of one env at once (issue 19, case 12): each assembles its context in a folder of its own, so
both finish and neither finds the other's half-written files; nothing is left under the build cache."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llm.env.site import cache_dir

from .conftest import REPO

pytestmark = pytest.mark.security


def test_two_builds_of_one_env_at_once_both_succeed(cpu_image):
    argv = [sys.executable, "-m", "invoke", "build-image", "--env", "cpu"]
    builds = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = []
    for proc in builds:
        try:
            out, err = proc.communicate(timeout=1200)
        except subprocess.TimeoutExpired:
            proc.kill()  # a process this test started
            out, err = proc.communicate()
        results.append((proc.returncode, err[-2000:]))
    assert [rc for rc, _ in results] == [0, 0], results
    # each removed its own context folder (other envs' builds may be running: the session builds twins meanwhile)
    left = [p.name for p in (cache_dir() / "build").iterdir() if p.name.startswith(".cpu-") and ".npubox-" in p.name]
    assert left == []
