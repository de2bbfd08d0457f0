"""Stand-ins for what an Ascend site drops into npubox: a CANN `.run` installer that honours the
real command line, and a local git repository in place of MindSpeed."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

RUN_HEADER = """#!/bin/sh
# Stand-in for {name}: the documented command line, a tiny payload.
set -eu
install=0; quiet=0; path=/usr/local/Ascend
for a in "$@"; do
    case "$a" in
        --install) install=1 ;;
        --quiet) quiet=1 ;;
        --install-for-all) ;;
        --install-path=*) path="${{a#--install-path=}}" ;;
        --version) echo {version}; exit 0 ;;
        *) echo "unknown option $a" >&2; exit 1 ;;
    esac
done
[ "$install" = 1 ] || {{ echo "nothing to do: pass --install" >&2; exit 1; }}
[ "$quiet" = 1 ] || {{ echo "the license prompt needs a terminal: pass --quiet" >&2; exit 1; }}
line=$(awk '/^__PAYLOAD__$/ {{ print NR + 1; exit 0 }}' "$0")
mkdir -p "$path"
tail -n +"$line" "$0" | tar -xzf - -C "$path"
echo "{name} installed in $path"
exit 0
__PAYLOAD__
"""

SET_ENV = """# Stand-in of CANN's set_env.sh: the same variables the real toolkit exports.
export ASCEND_TOOLKIT_HOME={path}/ascend-toolkit/latest
export LD_LIBRARY_PATH=${{ASCEND_TOOLKIT_HOME}}/lib64:${{ASCEND_TOOLKIT_HOME}}/lib64/plugin/opskernel:${{LD_LIBRARY_PATH:-}}
export PYTHONPATH=${{ASCEND_TOOLKIT_HOME}}/python/site-packages${{PYTHONPATH:+:$PYTHONPATH}}
export PATH=${{ASCEND_TOOLKIT_HOME}}/bin:$PATH
export ASCEND_AICPU_PATH=${{ASCEND_TOOLKIT_HOME}}
export ASCEND_OPP_PATH=${{ASCEND_TOOLKIT_HOME}}/opp
export TOOLCHAIN_HOME=${{ASCEND_TOOLKIT_HOME}}/toolkit
export ASCEND_HOME_PATH=${{ASCEND_TOOLKIT_HOME}}
"""  # noqa: E501  (the toolkit's own lines)


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644, link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
        return
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def make_cann_toolkit_run(folder: Path, version: str, arch: str) -> Path:
    """Write Ascend-cann-toolkit_<version>_linux-<arch>.run into folder."""
    name = f"Ascend-cann-toolkit_{version}_linux-{arch}.run"
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        root = f"ascend-toolkit/{version}"
        _add(tar, f"{root}/version.info", f"Version={version}\n".encode())
        _add(tar, f"{root}/{arch}-linux/ascend_toolkit_install.info", f"version={version}\narch={arch}\n".encode())
        _add(tar, f"{root}/lib64/libascendcl.so", b"\x7fELF stand-in\n")
        _add(tar, f"{root}/lib64/libhccl.so", b"\x7fELF stand-in\n")
        _add(tar, f"{root}/bin/ascend-stand-in", b"#!/bin/sh\necho stand-in\n", mode=0o755)
        _add(tar, "ascend-toolkit/latest", link=version)
        _add(tar, "ascend-toolkit/set_env.sh", SET_ENV.format(path="/usr/local/Ascend").encode())
    path = folder / name
    path.write_bytes(RUN_HEADER.format(name=name, version=version).encode() + payload.getvalue())
    path.chmod(0o755)
    return path


NNAL_SET_ENV = """# Stand-in of NNAL's nnal/atb/set_env.sh: the variables the real Ascend Transformer Boost exports.
export ATB_HOME_PATH={path}/nnal/atb/latest/atb/cxx_abi_0
export LD_LIBRARY_PATH=${{ATB_HOME_PATH}}/lib:${{ATB_HOME_PATH}}/examples:${{LD_LIBRARY_PATH:-}}
export PATH=${{ATB_HOME_PATH}}/bin:$PATH
"""


def make_nnal_run(folder: Path, version: str, arch: str) -> Path:
    """Write Ascend-cann-nnal_<version>_linux-<arch>.run into folder (NNAL: Ascend Transformer Boost)."""
    name = f"Ascend-cann-nnal_{version}_linux-{arch}.run"
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        root = f"nnal/atb/{version}"
        _add(tar, f"{root}/version.info", f"Version={version}\n".encode())
        _add(tar, f"{root}/atb/cxx_abi_0/lib/libatb.so", b"\x7fELF stand-in\n")
        _add(tar, "nnal/atb/latest", link=version)
        _add(tar, "nnal/atb/set_env.sh", NNAL_SET_ENV.format(path="/usr/local/Ascend").encode())
    path = folder / name
    path.write_bytes(RUN_HEADER.format(name=name, version=version).encode() + payload.getvalue())
    path.chmod(0o755)
    return path


def make_mindspeed_repo(folder: Path) -> tuple[Path, str]:
    """A local git repository standing in for MindSpeed; returns (repo, commit of its second commit)."""
    repo = folder / "MindSpeed.git"
    work = folder / "mindspeed-work"
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
    }

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "--quiet", "--initial-branch=master")
    (work / "mindspeed").mkdir()
    (work / "mindspeed" / "__init__.py").write_text("VERSION = 'first'\n")
    (work / "setup.py").write_text(
        "from setuptools import setup\nsetup(name='mindspeed', version='0.0.1', packages=['mindspeed'])\n"
    )
    git("add", "-A")
    git("commit", "--quiet", "-m", "first")
    (work / "mindspeed" / "__init__.py").write_text("VERSION = 'pinned'\n")
    git("commit", "--quiet", "-am", "pinned")
    pinned = git("rev-parse", "HEAD")
    (work / "mindspeed" / "__init__.py").write_text("VERSION = 'later'\n")
    git("commit", "--quiet", "-am", "later")
    git("clone", "--quiet", "--bare", str(work), str(repo), cwd=folder)
    return repo, pinned
