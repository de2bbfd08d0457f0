"""The Docker engine, through the `docker` CLI: actions are echoed, so a user can repeat them, and
every failure becomes one sentence saying what to do."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable

from llm.errors import NpuboxError

Echo = Callable[[str], None]


def _stderr_echo(line: str) -> None:
    print(f"+ {line}", file=sys.stderr, flush=True)


def docker_binary() -> str:
    path = shutil.which("docker")
    if path is None:
        raise NpuboxError(
            "Docker is not installed: install the engine and client (on Debian: `apt-get install docker.io`), "
            "start the daemon, and retry."
        )
    return path


def ensure_daemon() -> None:
    """Fail with one sentence when the daemon cannot be reached."""
    proc = subprocess.run(
        [docker_binary(), "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=60
    )
    if proc.returncode == 0 and proc.stdout.strip():
        return
    err = proc.stderr.strip()
    if "permission denied" in err.lower():
        raise NpuboxError(
            "You may not use the Docker daemon's socket: run as root or add your user to the `docker` group, "
            "then retry."
        )
    raise NpuboxError(
        "The Docker daemon is not running: start it (as root: `dockerd --bridge=none --iptables=false &`, or "
        "`systemctl start docker`; scripts/start-dockerd.sh does the former) and retry."
    )


def docker(
    args: list[str],
    *,
    echo: Echo | None = _stderr_echo,
    check: bool = True,
    capture: bool = False,
    what: str = "docker command",
    hint: str = "",
    input: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run `docker <args>` (an argv list, never a shell string), echoing the full command first."""
    argv = [docker_binary(), *args]
    if echo:
        echo(shlex.join(["docker", *args]))
    proc = subprocess.run(argv, text=True, capture_output=capture, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        detail = ""
        if capture and proc.stderr.strip():
            detail = f": {proc.stderr.strip().splitlines()[-1]}"
        raise NpuboxError(f"{what} failed (exit {proc.returncode}){detail}" + (f"; {hint}" if hint else ""))
    return proc


def image_exists(ref: str) -> bool:
    proc = subprocess.run([docker_binary(), "image", "inspect", ref], capture_output=True, text=True)
    return proc.returncode == 0


def inspect_image(ref: str) -> dict:
    import json

    proc = subprocess.run([docker_binary(), "image", "inspect", ref], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NpuboxError(f"image {ref} is not present in the local Docker engine")
    return json.loads(proc.stdout)[0]
