"""The images the session's integration tests need, built in the background from the moment the tests are collected:
the twins' multi-GB builds (mostly pip unpacking wheels and Docker writing layers) then overlap the unit tests, which
keep one of the two cores of a CI machine idle, each other, and the tests of the images already built. A fixture
waits for its own image's background build (the driver writes ``<log>.<n>.done`` when the n-th is over) and then
builds the image itself, which the layer cache makes a matter of seconds; where the background build failed, the
fixture's own build fails the same way, with the same message, where the test needs the image.

    python tests/integration/prebuild.py LOG SOURCE_CACHE cpu: ascend-mindspeed-llm-2.0.0:cpu   # ENV:TWIN each
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARALLEL = 2  # image builds at once, on top of the unit tests

_proc: subprocess.Popen | None = None
_log: Path | None = None
_builds: list[tuple[str, str | None]] = []


def start(builds: list[tuple[str, str | None]], source_cache: Path) -> None:
    """Start building ``builds`` ((env, twin or None), in the fixtures' order) in a background process."""
    global _proc, _log, _builds
    if _proc is not None or not builds:
        return
    _builds = list(builds)
    fd, name = tempfile.mkstemp(prefix="npubox-prebuild-", suffix=".log")
    _log = Path(name)
    argv = [sys.executable, __file__, name, str(source_cache), *(f"{env}:{twin or ''}" for env, twin in builds)]
    _proc = subprocess.Popen(argv, cwd=REPO, stdout=fd, stderr=subprocess.STDOUT, start_new_session=True)
    os.close(fd)


def wait(env: str, twin: str | None = None) -> None:
    """Wait until the background build of (env, twin) is over, or the driver is (bounded: a fixture's own build
    follows either way)."""
    if _proc is None or (env, twin) not in _builds:
        return
    done = Path(f"{_log}.{_builds.index((env, twin))}.done")
    deadline = time.monotonic() + 3600
    while not done.exists() and _proc.poll() is None and time.monotonic() < deadline:
        time.sleep(2)
    if done.exists() and done.read_text().strip() != "0":
        print(f"background build of {env} {twin or ''} failed (log: {_log}); building here", file=sys.stderr)


def stop() -> None:
    """End the driver (a session that ends early) and remove its files; the log stays where a build failed."""
    if _proc is None:
        return
    if _proc.poll() is None:  # the driver and the builds it started: its own process group
        os.killpg(_proc.pid, signal.SIGTERM)
        _proc.wait(timeout=120)
    marks = [Path(f"{_log}.{i}.done") for i in range(len(_builds))]
    failed = _proc.returncode != 0 or any(m.exists() and m.read_text().strip() != "0" for m in marks)
    for path in marks + ([] if failed else [_log]):
        path.unlink(missing_ok=True)


def _invoke(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, timeout=3600).returncode


def _build(log: str, source_cache: str, index: int, env: str, twin: str) -> int:
    twin_args = ["--twin", twin] if twin else []
    code = _invoke("build-image", "--env", env, *twin_args, "--source-cache", source_cache)
    Path(f"{log}.{index}.done").write_text(f"{code}\n")
    return code


def main(log: str, source_cache: str, specs: list[str]) -> int:
    builds = [(i, *spec.split(":", 1)) for i, spec in enumerate(specs)]
    for _, env, twin in builds:  # the bases first, one at a time (debootstrap), each once
        _invoke("base-image", "--env", env, *(["--twin", twin] if twin else []))
    with ThreadPoolExecutor(PARALLEL) as pool:  # in the fixtures' order: the CPU image first
        codes = list(pool.map(lambda b: _build(log, source_cache, *b), builds))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
