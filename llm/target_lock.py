"""One writer per output: an exclusive lock on ``.<name>.lock`` beside the output while a phase writes it.

Holding the lock is also what makes the temporaries a killed run left beside the output
(``.<name>.*.tmp``) safe to remove: no live writer of the same output can own them. A lock works
where a process id does not: two containers that share the workspace do not see each other's
processes, and a process id is reused after its process is gone; ``flock`` is released by the kernel
when its holder dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from llm.errors import NpuboxError


@contextlib.contextmanager
def lock_target(final: Path, what: str) -> Iterator[Path]:
    """Hold the lock of ``final`` (which need not exist) or refuse: another run is writing it.

    ``what`` names the output in the refusal, e.g. "--save-dir out/ckpt". The lock file is removed
    on release; a run that finds the file it locked already replaced takes the new one instead."""
    path = final.parent / f".{final.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NpuboxError(
                f"{what}: another run is writing it right now (it holds {path}); wait for it to finish, "
                "or write elsewhere"
            ) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder before us removed the file we opened: lock the new one
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def save_lock(save: str | None, first_process: bool) -> contextlib.AbstractContextManager:
    """A pretrain run's hold on ``--save``, taken by its first process (global rank 0 / node 0) before any
    worker writes: a second run into the same checkpoint folder is refused, however many nodes either has.
    The other processes of the same run do not take it."""
    if not save or not first_process:
        return contextlib.nullcontext()
    final = Path(save)
    final.parent.mkdir(parents=True, exist_ok=True)
    return lock_target(final, f"--save {final}")
