"""Images and containers made by others: their labels are not trusted as paths (issue 19, case 8), and a
container npubox did not start is not removed by `invoke down` (case 9). Both need a running Docker engine;
each test builds or creates its own throwaway object and removes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not docker_ready(), reason="needs a running Docker engine")


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture
def labelled_image():
    """A one-layer image whose npubox.env label climbs out of any output folder."""
    tag = f"npubox-test/hostile-labels:{os.getpid()}"
    dockerfile = f"FROM scratch\nLABEL npubox.env=../../escaped npubox.spec-hash={'ab' * 32}\n"
    build = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    yield tag
    subprocess.run(["docker", "rmi", "--force", tag], capture_output=True)  # our own throwaway image


def test_export_refuses_an_image_label_that_would_leave_the_output_folder(labelled_image, tmp_path):
    out = tmp_path / "a" / "b" / "out"
    proc = invoke("export-image", "--image", labelled_image, "--output", str(out))
    assert proc.returncode != 0
    assert f"the image {labelled_image} has the label npubox.env='../../escaped'" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert "docker save" not in proc.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == []


def test_down_leaves_a_container_npubox_did_not_start(labelled_image):
    name = f"npubox-test-foreign-{os.getpid()}"
    create = subprocess.run(
        ["docker", "create", "--name", name, labelled_image, "true"], capture_output=True, text=True
    )
    assert create.returncode == 0, create.stderr
    try:
        proc = invoke("down", "--name", name)
        assert proc.returncode != 0
        assert f"the container {name} was not started by npubox (it has no npubox.managed=true label)" in proc.stderr
        still = subprocess.run(["docker", "inspect", "--type", "container", name], capture_output=True)
        assert still.returncode == 0  # not removed
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)  # the container this test made


def test_down_of_no_such_container_says_so():
    proc = invoke("down", "--name", f"npubox-test-absent-{os.getpid()}")
    assert proc.returncode == 0
    assert "no such container" in proc.stderr
