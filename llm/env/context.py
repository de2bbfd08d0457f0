"""The build context of a plan, assembled on the host: the locked wheels (downloaded by the host's
own pip with the site's index, find-links, CA bundle and proxies), site wheels, CANN installers,
pinned source trees, the lock, the baked spec, the llm package and the Dockerfile. `docker build
--network none` then needs nothing else, and no site setting can reach a layer or a label.

    <context>/Dockerfile            containers/Dockerfile + the generated ENV block
    <context>/cann/                 order.txt + CANN installers (empty without installers)
    <context>/spec.json  llm/  requirements.lock  install-cann.sh
    <context>/deps/                 not sent to `docker build` (.dockerignore): mounted read-only into the
                                    container that installs it (llm/env/deps_image.py)
        wheels/                     every locked file (wheels; sdists of pure-Python packages)
        site-wheels/                wheels only the site has (Ascend apex), outside the lock
        sources/                    manifest.tsv + one archive per pinned source
        requirements.lock           the lock as installed (a twin's: without Ascend-only wheels)
        build-tools.lock            setuptools and wheel, installed first (they build the sdists)
        install-deps.sh  install-sources.sh
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llm
from llm.atomic import MARKER
from llm.digest import sha256_file
from llm.env.engine import Echo, _stderr_echo
from llm.env.labels import REPO_ROOT, baked_spec
from llm.env.plan import BuildPlan, image_platforms, wheel_cache
from llm.env.spec import LoadedSpec, render_lock
from llm.errors import NpuboxError

CONTAINERS = REPO_ROOT / "containers"
DOCKERFILE = CONTAINERS / "Dockerfile"
LLM_DIR = Path(llm.__file__).resolve().parent
ENV_MARKER = "# npubox: generated ENV lines"  # where the CANN and spec ENV lines go
DEPS = "deps"  # the context's folder of what llm/env/deps_image.py installs
BUILD_TOOLS = ("setuptools", "wheel")  # what `pip install --no-build-isolation` builds sdists with


@dataclass
class BuildContext:
    path: Path
    build_args: dict[str, str]
    unverified_sources: tuple[str, ...] = ()  # archives built with --allow-unverified-sources


def env_line(key: str, value: str, where: str) -> str:
    if "\n" in value:
        raise NpuboxError(f"{where}: field `env.{key}` contains a newline: expected a single-line value")
    # UTF-8 as is (Docker reads no \\u escapes); `$` as `\$`, which Docker's ENV keeps literally (no $VAR expansion).
    quoted = json.dumps(value, ensure_ascii=False).replace("$", "\\$")
    return f"ENV {key}={quoted}"


def render_dockerfile(loaded: LoadedSpec, cann_env: dict[str, str] | None = None) -> str:
    """containers/Dockerfile with the generated ENV block (CANN's set_env.sh exports, the spec's
    `env:` and PYTHONPATH) at its marker line."""
    lines = [env_line(k, v, "CANN set_env.sh") for k, v in sorted((cann_env or {}).items())]
    lines += [env_line(k, v, str(loaded.path)) for k, v in sorted(loaded.spec.env.items())]
    paths = ["/opt/npubox/src"] + [
        f"/opt/npubox/sources/{s.name}" for s in loaded.spec.sources if s.install == "pythonpath"
    ]
    tail = ":$PYTHONPATH" if cann_env and "PYTHONPATH" in cann_env else ""
    lines.append(f"ENV PYTHONPATH={':'.join(paths)}{tail}")
    text = DOCKERFILE.read_text()
    if ENV_MARKER not in text:
        raise NpuboxError(f"{DOCKERFILE}: the line {ENV_MARKER!r} is missing; it marks where the ENV lines go")
    return text.replace(ENV_MARKER, ENV_MARKER + "\n" + "\n".join(lines), 1)


def fetch_wheels(loaded: LoadedSpec, plan: BuildPlan, echo: Echo | None = _stderr_echo) -> list[Path]:
    """Every locked file for the image's Python and architecture, in the cache (offline first).

    Wheels where they exist; an sdist only where a package publishes none (pure-Python packages
    such as antlr4-python3-runtime), built inside the image from its hashed source.

    pip never writes into the shared cache, nor reads it directly: pip deletes a file of its --dest whose
    hash the lock does not name, and picks by name where two files share one. Its --dest is a scratch folder
    holding hard links to the cached files whose sha256 the lock names (pip skips those as downloaded);
    what it adds there is moved into the cache (:func:`keep_in_cache`): nothing in the cache is deleted or
    overwritten."""
    cache = wheel_cache(loaded)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = {h.removeprefix("sha256:") for e in loaded.lock for h in e.hashes}
    with tempfile.TemporaryDirectory(prefix=f".{cache.name}.{MARKER}", suffix=".tmp", dir=cache.parent) as tmp:
        out = Path(tmp)
        linked: dict[Path, tuple[Path, str]] = {}  # scratch name -> (the cached file, its sha256)
        for path in _cached_files(cache):
            digest = sha256_file(path)
            if digest in wanted and not (out / path.name).exists():
                _place(path, out / path.name)
                linked[out / path.name] = (path, digest)
        # --find-links the scratch folder itself: what is linked there is taken as downloaded
        common = [*pip_download_args(loaded, loaded.lock_path, out), "--prefer-binary", "--find-links", str(out)]
        site = plan.site
        offline = subprocess.run([*site.pip(), *common, "--no-index"], capture_output=True)
        if offline.returncode != 0:
            if echo:
                echo(" ".join(["pip", *common, *site.pip_find_links_args()]))
            proc = subprocess.run([*site.pip(), *common, *site.pip_find_links_args()], capture_output=True, text=True)
            if proc.returncode != 0:
                last = [line for line in proc.stderr.strip().splitlines() if line.startswith("ERROR")] or ["no output"]
                raise NpuboxError(
                    f"downloading the locked wheels of {loaded.lock_path.name} failed: {last[-1]}; check the pip "
                    "index settings (pip config list) or give a folder of wheels with --wheelhouse; "
                    f"nothing in {cache} was changed"
                )
        found: dict[str, Path] = {}
        for f in sorted(p for p in out.iterdir() if p.is_file()):
            cached, digest = linked.get(f, (None, ""))
            if cached is not None and os.path.samefile(cached, f):
                found[digest] = cached  # a cached file pip took as downloaded: hashed once, above
            else:
                digest = sha256_file(f)
                found[digest] = keep_in_cache(f, cache, digest)
    absent = [e.name for e in loaded.lock if not found.keys() & {h.removeprefix("sha256:") for h in e.hashes}]
    if absent:
        raise NpuboxError(f"no file for {', '.join(absent)} of {loaded.lock_path.name} after pip download")
    return list(found.values())


def _cached_files(cache: Path) -> list[Path]:
    """The cache's files: by name, and under ``sha256/<digest>/`` those that share a name with another."""
    return [
        p
        for p in sorted([*cache.iterdir(), *cache.glob("sha256/*/*")])
        if p.is_file() and p.name.endswith((".whl", ".tar.gz", ".zip"))
    ]


def pip_download_args(loaded: LoadedSpec, requirements: Path, dest: Path) -> list[str]:
    """`pip download` of a hash-pinned ``requirements`` file as the image installs it: no dependencies, for the
    image's Python and platforms, into ``dest``."""
    args = ["download", "--no-deps", "--require-hashes", "--dest", str(dest), "--python-version", loaded.spec.python]
    args += ["--implementation", "cp", "--progress-bar", "off", "-r", str(requirements)]
    for plat in image_platforms(loaded):
        args += ["--platform", plat]
    return args


def keep_in_cache(verified: Path, cache: Path, digest: str) -> Path:
    """Move a file pip verified into ``cache`` under its own name, unless the cache already holds that name: the
    same bytes are then used as they are, and other bytes of that name (another lock's file) are left alone while
    this one goes to ``cache/sha256/<digest>/``. ``digest``: the verified file's sha256."""
    target = cache / verified.name
    if target.is_file() and sha256_file(target) == digest:
        return target
    if target.exists() or target.is_symlink():
        target = cache / "sha256" / digest / verified.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and sha256_file(target) == digest:
            return target
    try:
        os.link(verified, target)  # never replaces a name (os.replace would): two builds may race here
    except FileExistsError:
        if sha256_file(target) != digest:
            raise NpuboxError(f"{target}: appeared with other bytes while this build verified its own") from None
    return target


def _place(src: Path, target: Path) -> None:
    try:
        os.link(src, target)
    except OSError:
        shutil.copy2(src, target)


def assemble(
    plan: BuildPlan, base_ref: str, files: list[Path], ctx: Path, echo: Echo | None = _stderr_echo
) -> BuildContext:
    """Fill the empty folder ``ctx`` (:func:`build_folder`) with the build context of ``plan``."""
    from llm.env.sources import export_source

    loaded = plan.loaded
    deps = ctx / DEPS
    for sub in ("wheels", "site-wheels", "sources"):
        (deps / sub).mkdir(parents=True)
    (ctx / "cann").mkdir()
    (ctx / ".dockerignore").write_text(f"{DEPS}\n")
    for path in files:
        _place(path, deps / "wheels" / path.name)
    for path in plan.site_wheels:
        _place(path, deps / "site-wheels" / path.name)
    for path in plan.installers:
        _place(path, ctx / "cann" / path.name)
    (ctx / "cann" / "order.txt").write_text("".join(f"{p.name}\n" for p in plan.installers))
    rows, unverified = [], []
    allow = plan.build_inputs.allow_unverified_sources
    for src in loaded.spec.sources:
        archive, verified = export_source(src, plan.build_inputs.source_cache, deps / "sources", echo, allow)
        if not verified:
            unverified.append(src.name)
        rows.append("\t".join([src.name, src.commit, src.install, src.subdir or "-", src.into or "-", archive.name]))
    (deps / "sources" / "manifest.tsv").write_text("".join(f"{r}\n" for r in rows))
    for script in ("install-deps.sh", "install-sources.sh"):
        shutil.copy2(CONTAINERS / script, deps / script)
    shutil.copy2(CONTAINERS / "install-cann.sh", ctx / "install-cann.sh")
    shutil.copyfile(loaded.lock_path, deps / "requirements.lock")
    shutil.copyfile(loaded.lock_path, ctx / "requirements.lock")
    tools = [e for e in loaded.lock if e.name.lower() in BUILD_TOOLS]
    (deps / "build-tools.lock").write_text(render_lock(tools, "# installed first: they build the locked sdists"))
    (ctx / "spec.json").write_text(json.dumps(baked_spec(loaded), indent=2, sort_keys=True) + "\n")
    shutil.copytree(LLM_DIR, ctx / "llm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (ctx / "Dockerfile").write_text(render_dockerfile(loaded))
    build_args = {
        "BASE_IMAGE": base_ref,
        "PYTHON_VERSION": loaded.spec.python,
        "CANN_MODE": plan.cann_mode,
        "CANN_VERSION": loaded.spec.cann.version if loaded.spec.cann else "",
        "CANN_SET_ENV": " ".join(loaded.spec.cann.set_env) if loaded.spec.cann else "",
    }
    return BuildContext(ctx, build_args, tuple(unverified))


@contextlib.contextmanager
def build_folder(loaded: LoadedSpec) -> Iterator[Path]:
    """A build context folder of this build's own under ``<cache>/build``, removed when the build ends however
    it ends: two builds at once (of one env or two) never share one. Docker's layer cache keys on the
    content, not the folder, so finished steps stay cached."""
    from llm.env.site import cache_dir

    root = cache_dir() / "build"
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{loaded.name}-{loaded.arch}.{MARKER}", suffix=".tmp", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
