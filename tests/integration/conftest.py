"""Integration tests: a real Docker engine, the CPU image built from the debootstrapped base."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SOURCES  # the pinned sources' archives, named by commit

REPO = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]
# The Ascend stack whose CPU twin the twin tests build (README: the other stacks, one command each).
TWIN_ENV = os.environ.get("NPUBOX_TWIN_ENV", "ascend-mindspeed-llm-2.0.0")
MINDFORMERS_TWIN_ENV = os.environ.get("NPUBOX_MINDFORMERS_TWIN_ENV", "ascend-mindformers-1.8.0")
# fixture -> (env, twin) of the image it builds
IMAGES = {
    "cpu_image": ("cpu", None),
    "twin_image": (TWIN_ENV, "cpu"),
    "mindformers_twin_image": (MINDFORMERS_TWIN_ENV, "cpu"),
}


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def pytest_collection_finish(session):
    """The images the selected tests need start building now, in the background (tests/integration/prebuild.py)."""
    if not docker_ready():
        return
    from tests.integration import prebuild

    wanted = {name for item in session.items for name in getattr(item, "fixturenames", ()) if name in IMAGES}
    twins_buildable = SOURCES.is_dir()
    prebuild.start([IMAGES[n] for n in IMAGES if n in wanted and (n == "cpu_image" or twins_buildable)], SOURCES)


def pytest_collection_modifyitems(config, items):
    if docker_ready():
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI: the Docker engine is not running; .ci/run must start dockerd first")
    skip = pytest.mark.skip(reason="no running Docker engine (start dockerd: scripts/start-dockerd.sh)")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cpu_image() -> str:
    """Bootstrap the base (if missing) and build the CPU image (cached layers make this fast when built)."""
    from llm.env import commands
    from tests.integration import prebuild

    prebuild.wait("cpu")
    commands.base_image("cpu")
    return commands.build("cpu", [])


@pytest.fixture(scope="session")
def twin_image() -> str:
    """Bootstrap the twins' base (if missing) and build TWIN_ENV's CPU twin from ../shared/sources."""
    from llm.env import commands
    from tests.integration import prebuild

    prebuild.wait(TWIN_ENV, "cpu")
    commands.base_image(TWIN_ENV, twin="cpu")
    return commands.build(TWIN_ENV, [], source_cache=str(SOURCES), twin="cpu")


@pytest.fixture(scope="session")
def mindformers_twin_image() -> str:
    """MINDFORMERS_TWIN_ENV's CPU twin, from ../shared/sources."""
    from llm.env import commands
    from tests.integration import prebuild

    prebuild.wait(MINDFORMERS_TWIN_ENV, "cpu")
    commands.base_image(MINDFORMERS_TWIN_ENV, twin="cpu")
    return commands.build(MINDFORMERS_TWIN_ENV, [], source_cache=str(SOURCES), twin="cpu")


def pytest_sessionfinish(session, exitstatus):
    from tests.integration import prebuild

    prebuild.stop()


def invoke(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*INVOKE, *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=1800
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"invoke {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "workspace"
    ws.mkdir()
    os.chown(ws, 1234, 1234) if os.geteuid() == 0 else None
    return ws
