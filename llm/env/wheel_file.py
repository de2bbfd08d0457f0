"""What a wheel file really holds, read from the file itself: a wheel the build plan finds by its file name (in
``--wheelhouse`` or the wheel cache) is opened before the plan calls it present, so an empty file, a renamed wheel of
another project or one built for another Python is named with what it is, not left to fail later inside pip."""

from __future__ import annotations

import zipfile
from email.parser import HeaderParser
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version


def installable_tags(python: str, platforms: list[str]) -> set[Tag]:
    """The tags CPython ``python`` ("3.10") installs on ``platforms`` (llm.env.arch.pip_platforms)."""
    version = tuple(int(part) for part in python.split(".")[:2])
    interpreter = f"cp{version[0]}{version[1]}"
    return {
        *cpython_tags(python_version=version, platforms=platforms),
        *compatible_tags(python_version=version, interpreter=interpreter, platforms=platforms),
    }


def wheel_problem(path: Path, python: str, arch: str, platforms: list[str]) -> str | None:
    """Why ``path`` is not the wheel its file name says, installable by CPython ``python`` on ``arch`` (whose image
    accepts ``platforms``), as a phrase to follow the path ("is empty ..."); None when it is. The file name must
    parse as a wheel's."""
    name, version, _build, tags = parse_wheel_filename(path.name)
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes), not a wheel"
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            infos = sorted({m.split("/", 1)[0] for m in members if m.split("/", 1)[0].endswith(".dist-info")})
            with_metadata = [d for d in infos if f"{d}/METADATA" in members]
            if len(with_metadata) != 1:
                return f"holds {len(with_metadata)} *.dist-info/METADATA files ({', '.join(infos) or 'none'}), not one"
            info = with_metadata[0]
            if f"{info}/WHEEL" not in members:
                return f"has no {info}/WHEEL, which every wheel carries"
            metadata = HeaderParser().parsestr(archive.read(f"{info}/METADATA").decode("utf-8", errors="replace"))
    except zipfile.BadZipFile:
        return f"is not a zip archive ({size} bytes), so not a wheel"
    held_name, held_version = metadata.get("Name") or "?", metadata.get("Version") or "?"
    try:
        same_version = Version(held_version) == version
    except InvalidVersion:
        same_version = False
    if canonicalize_name(held_name) != name or not same_version:
        return f"holds {held_name} {held_version} ({info}/METADATA), not {name} {version} as its file name says"
    if not tags & installable_tags(python, platforms):
        built = ", ".join(sorted(str(t) for t in tags))
        return f"is built for {built}, which CPython {python} on {arch} cannot install"
    return None
