"""Write files so that a reader never sees half of one: temporary name, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Every temporary npubox makes is `.<final name>.npubox-<8 characters of tempfile's alphabet><suffix>`, or, for the
# folder atomic_dir moves aside, `.<final name>.npubox-old-<pid>`: only a name of exactly that shape is ever removed
# as a leftover, so a user's `.<name>.my-backup.tmp` is never taken for one.
MARKER = "npubox-"
TEMP_SUFFIXES = (".tmp", ".lengths")


def leftovers_beside(final: Path) -> list[Path]:
    """What an interrupted npubox run left beside ``final``: the temporaries :func:`temp_beside` and
    :func:`atomic_dir` name, and nothing else. Call it holding the target's lock (llm.target_lock), so that no live
    run owns them."""
    suffixes = "|".join(re.escape(s) for s in TEMP_SUFFIXES)
    shape = re.compile(rf"^\.{re.escape(final.name)}\.{MARKER}([a-z0-9_]{{8}}({suffixes})|old-\d+)$")
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if shape.match(p.name) and not p.is_symlink())


def remove_leftovers(final: Path, what: str) -> None:
    """Remove :func:`leftovers_beside` ``final``, saying so (``what``: the kind of run that left them)."""
    import sys

    for entry in leftovers_beside(final):
        print(f"removing {entry} (left by an interrupted {what})", file=sys.stderr)
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def temp_beside(final: Path, suffix: str = ".tmp") -> Path:
    """A new empty file `.<name>.npubox-<random><suffix>` in final's folder (same file system: rename works)."""
    assert suffix in TEMP_SUFFIXES, suffix
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.{MARKER}", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the final file gets the usual permissions
    return tmp


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync it and rename it onto ``final``.

    On an exception the temporary file is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(final)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(final: Path | str, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` whole.

    An existing ``final`` is moved aside and deleted only after the new one is in place, so a
    failure at any point leaves either the old content or the new, never a mix."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{MARKER}", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.{MARKER}old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
