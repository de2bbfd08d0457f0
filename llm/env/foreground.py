"""A one-off container in the foreground that ends with its caller: SIGTERM, SIGINT or SIGHUP to `invoke run`
becomes `docker stop` of its container (SIGTERM to the phase inside, SIGKILL after STOP_GRACE_S), so a stopped
`invoke run` never leaves a container writing into the workspace. Pretrain saves a checkpoint on that SIGTERM
(llm.pretrain.mcore.stop_signal).

The docker client runs in a session of its own with `--sig-proxy=false`: a Ctrl-C in the terminal reaches only
this process, which turns it into the one `docker stop`, instead of also reaching the phase as SIGINT."""

from __future__ import annotations

import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from llm.env.engine import Echo, docker_binary

STOP_GRACE_S = 120  # docker stop --time: how long the phase has to save before SIGKILL
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
POLL_S = 0.2


def run_stoppable(run_args: list[str], echo: Echo | None) -> int:
    """`docker run <run_args>` until it ends; returns its exit code (non-zero when a signal stopped it)."""
    received: list[int] = []
    with tempfile.TemporaryDirectory(prefix="npubox-run-") as tmp:
        cidfile = Path(tmp) / "container-id"
        args = ["run", "--cidfile", str(cidfile), "--sig-proxy=false", *run_args]
        if echo:
            echo(shlex.join(["docker", *args]))
        previous = {s: signal.signal(s, lambda signum, _frame: received.append(signum)) for s in FORWARDED}
        try:
            proc = subprocess.Popen([docker_binary(), *args], start_new_session=True)
            code = _wait(proc, cidfile, received, echo)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if received:
            _remove_if_left(cidfile)  # a signal before the container existed: docker may still have made it
            return code or 128 + received[0]
        return code


def _container_id(cidfile: Path) -> str:
    try:
        return cidfile.read_text().strip()
    except FileNotFoundError:
        return ""


def _wait(proc: subprocess.Popen, cidfile: Path, received: list[int], echo: Echo | None) -> int:
    stopping_since = None
    while True:
        try:
            return proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if received and stopping_since is None:
            stopping_since = time.monotonic()
            cid = _container_id(cidfile)
            name = signal.Signals(received[0]).name
            if echo:
                echo(
                    f"{name}: stopping the container {cid[:12] or '(not started yet)'}: SIGTERM to the phase, "
                    f"SIGKILL after {STOP_GRACE_S} s; pretrain saves a checkpoint first"
                )
            if cid:
                subprocess.Popen([docker_binary(), "stop", "--time", str(STOP_GRACE_S), cid], stdout=subprocess.DEVNULL)
            else:
                proc.terminate()
        if stopping_since is not None and time.monotonic() - stopping_since > STOP_GRACE_S + 30:
            cid = _container_id(cidfile)
            if cid:
                subprocess.run([docker_binary(), "kill", cid], capture_output=True)
            proc.kill()
            return proc.wait()


def _remove_if_left(cidfile: Path) -> None:
    cid = _container_id(cidfile)
    if cid:
        subprocess.run([docker_binary(), "rm", "--force", cid], capture_output=True)  # the container we started
