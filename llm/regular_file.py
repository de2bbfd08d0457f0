"""Paths npubox reads as files must be regular files: opening a FIFO blocks until a writer comes (forever, when
none does), and a device such as ``/dev/zero`` never ends. Both are refused before a byte is read, naming what the
path is instead; a symlink is followed, so a link to a regular file is fine."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

from llm.errors import NpuboxError

KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def _refuse(path: Path | str, mode: int, what: str) -> NpuboxError:
    return NpuboxError(f"{path}: is {kind_of(mode)}, not a regular file; expected {what}")


def require_regular(path: Path | str, what: str) -> Path:
    """``path`` if it names a regular file; else a refusal: "not found" or what it is instead."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise NpuboxError(f"{path}: not found; expected {what}") from None
    if not stat.S_ISREG(mode):
        raise _refuse(path, mode, what)
    return Path(path)


def open_regular(path: Path | str, what: str, mode: str = "rb", encoding: str | None = None) -> IO:
    """``open(path, mode)`` for reading, refusing anything but a regular file without blocking on it: the file is
    opened non-blocking (a FIFO opens at once) and checked on the descriptor itself, so no swap can slip between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NpuboxError(f"{path}: not found; expected {what}") from None
    try:
        st_mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(st_mode):
            raise _refuse(path, st_mode, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, encoding=encoding)
    except BaseException:
        os.close(fd)
        raise
