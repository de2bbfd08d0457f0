"""The images the session's integration tests need, built in the background from the moment the tests are collected:
the twins' multi-GB builds (mostly pip unpacking wheels and Docker writing layers) then overlap the unit tests, which
keep one of the two cores of a CI machine idle, and each other. A fixture waits for the background build and then
builds its image itself, which the layer cache makes a matter of seconds; where the background build failed, the
fixture's own build fails the same way, with the same message, where the test needs the image.

    python tests/integration/prebuild.py cpu: ascend-mindspeed-llm-2.0.0:cpu   # ENV:TWIN, what the fixtures build
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARALLEL = 2  # image builds at once, on top of the unit tests

_proc: subprocess.Popen | None = None
_log: Path | None = None


def start(builds: list[tuple[str, str | None]], source_cache: Path) -> None:
    """Start building ``builds`` ((env, twin or None), in the fixtures' order) in a background process."""
    global _proc, _log
    if _proc is not None or not builds:
        return
    fd, name = tempfile.mkstemp(prefix="npubox-prebuild-", suffix=".log")
    _log = Path(name)
    argv = [sys.executable, __file__, str(source_cache), *(f"{env}:{twin or ''}" for env, twin in builds)]
    _proc = subprocess.Popen(argv, cwd=REPO, stdout=fd, stderr=subprocess.STDOUT, start_new_session=True)
    os.close(fd)


def wait() -> None:
    """Wait for the background builds (bounded: a fixture's own build follows either way)."""
    if _proc is None:
        return
    try:
        _proc.wait(timeout=3600)
    except subprocess.TimeoutExpired:
        _proc.kill()
        _proc.wait()
    if _proc.returncode != 0:
        print(f"background image builds exited {_proc.returncode} (log: {_log}); building here", file=sys.stderr)
    elif _log is not None:
        _log.unlink(missing_ok=True)


def stop() -> None:
    if _proc is not None and _proc.poll() is None:
        _proc.terminate()
        _proc.wait(timeout=120)


def _invoke(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, timeout=3600).returncode


def _build(source_cache: str, env: str, twin: str) -> int:
    twin_args = ["--twin", twin] if twin else []
    return _invoke("build-image", "--env", env, *twin_args, "--source-cache", source_cache)


def main(source_cache: str, specs: list[str]) -> int:
    builds = [tuple(spec.split(":", 1)) for spec in specs]
    for env, twin in builds:  # the bases first, one at a time (debootstrap), each once
        if _invoke("base-image", "--env", env, *(["--twin", twin] if twin else [])) != 0:
            return 1
    with ThreadPoolExecutor(PARALLEL) as pool:
        codes = list(pool.map(lambda b: _build(source_cache, *b), builds))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
