"""CPU architectures: this host's, and the platform tags a package index knows them by."""

from __future__ import annotations

import platform
from pathlib import Path

from llm.errors import NpuboxError

ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
ARCHES = ("x86_64", "aarch64")
# glibc of the base images: Debian bookworm (the CPU env and the twins) 2.36; Ubuntu 22.04 (the
# CANN images) 2.35. Wheels tagged for a newer glibc would not load there; locks resolve for the older.
GLIBC_BOOKWORM = 36
GLIBC = (2, 35)


def host_arch() -> str:
    return ARCH_ALIASES.get(platform.machine(), platform.machine())


def check_arch(arch: str, listed: list[str], spec_path: Path) -> str:
    """``arch`` (or an alias of it) if it is one npubox builds for and the spec lists, else a refusal."""
    name = ARCH_ALIASES.get(arch, arch)
    if name not in ARCHES:
        raise NpuboxError(f"--arch {arch!r}: not an architecture npubox builds for; use one of {', '.join(ARCHES)}")
    if name not in listed:
        raise NpuboxError(f"--arch {arch}: {spec_path} lists only {', '.join(listed)}")
    return name


def pip_platforms(arch: str, glibc_minor: int = GLIBC_BOOKWORM) -> list[str]:
    """Platform tags an image with glibc 2.<glibc_minor> accepts, newest first, for `pip download --platform`."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 16, -1)] + [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags + [f"linux_{arch}"]


def uv_platform(arch: str) -> str:
    """The target `uv pip compile --python-platform` resolves for."""
    return f"{arch}-manylinux_{GLIBC[0]}_{GLIBC[1]}"
