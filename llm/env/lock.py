"""Resolve a spec into its lock: every package pinned, with hashes, for the spec's Python and each
CPU architecture — the spec's own pins plus the requirements files of its pinned sources.

Resolution targets another Python and platform than the host's, so it uses uv (`uv pip compile
--python-version --python-platform`), fed with this host's pip configuration (index, extra
indexes, find-links, constraints, CA bundle) read at run time and never written into the lock.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from llm.atomic import atomic_path
from llm.env.arch import check_arch, host_arch, uv_platform
from llm.env.arch_files import pin_files
from llm.env.site import Site
from llm.env.spec import LoadedSpec, Source, load_spec_file
from llm.errors import NpuboxError


def pip_config() -> dict[str, list[str]]:
    """This host's pip settings ({key: values}), as `pip config list` shows them (files and PIP_* variables)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    out: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1]
        value = value.strip().strip("'\"")
        out[name] = value.split()  # pip separates several values by whitespace (later sources win)
    return out


def uv_site_args(site: Site, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """uv flags and environment that make it see what this host's pip sees (constraint files are
    copied into ``workdir`` so that no path of this host is named in the lock's annotations)."""
    conf = pip_config()
    args = ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best version from any configured index
    for url in conf.get("index-url", [])[:1]:
        args += ["--index-url", url]
    for url in conf.get("extra-index-url", []):
        args += ["--extra-index-url", url]
    for place in [*conf.get("find-links", []), *map(str, site.wheelhouse)]:
        args += ["--find-links", place]
    constraints = [path for path in conf.get("constraint", []) if Path(path).is_file()]
    for i, path in enumerate(constraints):
        name = f"site-constraints-{i}.txt"
        (workdir / name).write_text(Path(path).read_text())
        args += ["--constraint", name]
    env = dict(os.environ)
    for cert in conf.get("cert", [])[:1]:
        env["SSL_CERT_FILE"] = cert  # corporate TLS interception: the bundle pip trusts
    return args, env


def source_file(src: Source, relpath: str, source_cache: Path | None) -> str:
    """The text of ``relpath`` in ``src`` at its pinned commit, from the source cache (archive or git)."""
    from llm.env.sources import _git, check_commit_object, locate

    located = locate(src, source_cache)
    if located.kind == "archive":
        with tarfile.open(located.path) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.split("/", 1)[-1] == relpath:
                    return tar.extractfile(member).read().decode("utf-8")
        raise NpuboxError(f"source {src.name}: {located.path} holds no {relpath}")
    if located.kind == "repo":
        check_commit_object(src, located.path, located.where)
        proc = _git(["show", f"{src.commit}:{relpath}"], cwd=located.path)
        if proc.returncode != 0:
            raise NpuboxError(f"source {src.name}: {relpath} does not exist at {src.commit[:12]} in {located.where}")
        return proc.stdout
    raise NpuboxError(
        f"source {src.name}: its {relpath} goes into the lock, but no copy of it at {src.commit[:12]} is here; put "
        f"{src.name}-{src.commit}.tar.gz or {src.name}.git in a folder and pass --source-cache DIR"
    )


def lock_header(loaded: LoadedSpec) -> str:
    what = f"the CPU twin of envs/{loaded.path.name}" if loaded.twin_of is not None else f"envs/{loaded.path.name}"
    lines = [
        f"# Lock for {what} on {loaded.arch}, Python {loaded.spec.python}: every package pinned with hashes.",
        f"# Regenerate with `{loaded.lock_hint}` (uv pip compile for that Python and platform).",
    ]
    lines += [f"# source {s.name} {s.commit} {f}" for s in loaded.spec.sources for f in s.requirements]
    return "\n".join(lines) + "\n"


def write_lock(loaded: LoadedSpec, site: Site, source_cache: Path | None = None, echo=print) -> Path:
    """Resolve ``loaded`` for its architecture; the lock is replaced only when resolution succeeded.

    A twin resolves the real lock's pins (llm.env.twin.twin_pins) instead of the spec and sources."""
    spec = loaded.spec
    with tempfile.TemporaryDirectory(prefix="npubox-lock-") as tmp:
        inputs = [f"{spec.name}.in"]
        if loaded.twin_of is not None:
            from llm.env.twin import pinned_from, twin_pins

            pins = twin_pins(loaded.twin_of)
            inputs = [f"{pinned_from(loaded.twin_of).lock_path.name}.pins"]
            (Path(tmp) / inputs[0]).write_text("\n".join(pins) + "\n")
        else:
            (Path(tmp) / inputs[0]).write_text("\n".join(spec.requirements) + "\n")
            for src in spec.sources:
                for relpath in src.requirements:
                    name = f"{src.name}@{src.commit[:7]}.{relpath.replace('/', '_')}"
                    (Path(tmp) / name).write_text(source_file(src, relpath, source_cache))
                    inputs.append(name)
        site_args, env = uv_site_args(site, Path(tmp))
        with atomic_path(loaded.lock_path) as out:
            compile_args = [
                "pip",
                "compile",
                *inputs,
                "--python-version",
                spec.python,
                "--python-platform",
                uv_platform(loaded.arch),
                "--generate-hashes",
            ]
            echo(" ".join(["uv", *compile_args]))
            cmd = [
                sys.executable,
                "-m",
                "uv",
                *compile_args,
                "--no-header",
                "--quiet",
                "--output-file",
                str(out),
                *site_args,
            ]
            proc = subprocess.run(cmd, cwd=tmp, env=env, text=True, capture_output=True)
            if proc.returncode != 0:
                detail = " ".join(line.strip() for line in proc.stderr.strip().splitlines()[-6:]) or "no output"
                plus_cpu = re.search(r"torch==(\S+\+cpu)", detail)
                if plus_cpu:
                    detail = (
                        f"torch_npu's {loaded.arch} wheels require torch=={plus_cpu.group(1)}, which only PyTorch's "
                        "own CPU index publishes: add it to pip's configuration (`pip config set "
                        "global.extra-index-url <PyTorch's /whl/cpu index>`) and run the lock again"
                    )
                raise NpuboxError(
                    f"resolving {loaded.path} for {loaded.arch} failed (uv exit {proc.returncode}): {detail}"
                )
            out.write_text(lock_header(loaded) + pin_files(out.read_text(), loaded, site, echo))
    return loaded.lock_path


def write_locks(
    loaded: LoadedSpec,
    site: Site,
    arches: list[str] | None,
    source_cache: Path | None = None,
    echo=print,
    twin: str | None = None,
) -> list[Path]:
    """One lock per architecture (``arches``; None: every one the spec lists) for a spec whose `lock` names
    `{arch}`; else the one lock, which is resolved for this host's architecture."""
    from llm.env.twin import make_twin

    def one(arch: str | None) -> Path:
        real = load_spec_file(loaded.path, arch)
        return write_lock(make_twin(real, twin) if twin else real, site, source_cache, echo)

    wanted = [check_arch(a, loaded.spec.arch, loaded.path) for a in arches] if arches else None  # before any write
    if "{arch}" not in loaded.spec.lock:
        if wanted and wanted != [host_arch()]:
            raise NpuboxError(
                f"--arch {','.join(arches)}: {loaded.path} has one lock ({loaded.spec.lock}), resolved for this "
                f"host's architecture ({host_arch()}); run `invoke lock` without --arch, or on a {wanted[0]} host"
            )
        return [one(None)]
    return [one(arch) for arch in wanted or loaded.spec.arch]
