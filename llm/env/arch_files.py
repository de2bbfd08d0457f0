"""Packages whose wheel tags do not say their architecture: the lock keeps one file per architecture for them.

MindSpore's aarch64 wheels on the index are tagged ``py3-none-any`` and hold aarch64 binaries
(``mindspore-2.7.2-cp311-none-any.whl``, 320 MB), so a lock that lists the hash of every file of the version would
let pip install that file on an x86_64 machine wherever no better-tagged file of the version exists. For these
packages the lock keeps only the hash of the file the host's pip picks for the lock's Python and platform, and
names it in a comment; the file goes into the wheel cache, where the build finds it.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from llm.atomic import MARKER
from llm.digest import sha256_file
from llm.env.site import Site
from llm.env.spec import LoadedSpec
from llm.errors import NpuboxError

MISTAGGED = frozenset({"mindspore"})
OTHER_ARCH = {"x86_64": "aarch64", "aarch64": "x86_64"}
SO_ARCH = re.compile(r"\.cpython-\d+-(x86_64|aarch64)-linux-gnu\.so$")


def _entry_block(name: str) -> re.Pattern:
    """`name==version \\` and its --hash lines, in uv's output."""
    return re.compile(rf"^({re.escape(name)}==(\S+)) \\\n((?:    --hash=sha256:[0-9a-f]{{64}}(?: \\)?\n)+)", re.M)


def pin_files(text: str, loaded: LoadedSpec, site: Site, echo: Callable[[str], None] = print) -> str:
    """``text`` (a lock from uv) with each MISTAGGED package's hashes cut to the one file for ``loaded.arch``."""
    from llm.env.context import keep_in_cache
    from llm.env.plan import wheel_cache

    for name in MISTAGGED:
        for m in list(_entry_block(name).finditer(text)):
            hashes = re.findall(r"sha256:([0-9a-f]{64})", m.group(3))
            cache = wheel_cache(loaded)
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=f".{cache.name}.{MARKER}", suffix=".tmp", dir=cache.parent) as tmp:
                path = _download_one(loaded, site, m.group(1), hashes, Path(tmp), echo)
                digest = sha256_file(path)
                other = OTHER_ARCH[loaded.arch]
                if any(other in t.platform for t in parse_wheel_filename(path.name)[3]) or other in binary_arches(path):
                    raise NpuboxError(f"pip picked {path.name} for {loaded.arch}: it holds {other} binaries")
                keep_in_cache(path, cache, digest)
            block = f"{m.group(1)} \\\n    --hash=sha256:{digest}\n    # the one file for {loaded.arch}: {path.name}\n"
            text = text.replace(m.group(0), block, 1)
    return text


def binary_arches(wheel: Path) -> set[str]:
    """The architectures a wheel's extension modules are built for, read from their names
    (``_c_expression.cpython-311-aarch64-linux-gnu.so``), whatever its tags say."""
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        return {m.group(1) for n in z.namelist() if (m := SO_ARCH.search(n))}


def _download_one(loaded: LoadedSpec, site: Site, pin: str, hashes: list[str], tmp: Path, echo) -> Path:
    """The file the host's pip takes for ``pin`` on the lock's Python and platform, downloaded into ``tmp``."""
    from llm.env.context import pip_download_args

    req = Path(tmp) / "one.txt"
    req.write_text(f"{pin} " + " ".join(f"--hash=sha256:{h}" for h in hashes) + "\n")
    dest = Path(tmp) / "dest"
    cmd = [*site.pip(), *pip_download_args(loaded, req, dest), "--only-binary", ":all:", *site.pip_find_links_args()]
    echo(f"pip download {pin} for {loaded.arch}, Python {loaded.spec.python} (one file per architecture)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if proc.returncode != 0 or len(files) != 1:
        last = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or ["no wheel"]
        raise NpuboxError(f"finding the {loaded.arch} file of {pin} for the lock failed: {last[-1]}")
    if canonicalize_name(parse_wheel_filename(files[0].name)[0]) != canonicalize_name(pin.split("==")[0]):
        raise NpuboxError(f"pip downloaded {files[0].name} for {pin}")
    return files[0]
