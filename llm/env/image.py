"""Spec → image: collect the locked inputs on the host, then build offline.

The host's pip (with the site's index, find-links, CA bundle and proxies) downloads exactly the
locked wheels into a cache; the build context holds those wheels, the lock, the spec and the
llm package; `docker build --network none` turns them into the image. Site settings are used on
the host only, so they can never end up in a layer, a label or the image history.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import llm
from llm.env.base import resolve_base
from llm.env.engine import Echo, _stderr_echo, docker
from llm.env.site import Site, cache_dir
from llm.env.spec import LoadedSpec
from llm.errors import NpuboxError

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "containers" / "Dockerfile"
LLM_DIR = Path(llm.__file__).resolve().parent

ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def host_arch() -> str:
    return ARCH_ALIASES.get(platform.machine(), platform.machine())


def pip_platforms(arch: str) -> list[str]:
    """Platform tags a glibc-2.36 (bookworm) image accepts, for `pip download --platform`."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)] + [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags + [f"linux_{arch}"]


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def labels(loaded: LoadedSpec, base_ref: str) -> dict[str, str]:
    """OCI labels plus npubox.* labels: every pin, the spec hash. No site settings."""
    spec = loaded.spec
    out = {
        "org.opencontainers.image.title": f"npubox/{spec.name}",
        "org.opencontainers.image.description": spec.description,
        "org.opencontainers.image.version": spec.version,
        "org.opencontainers.image.revision": git_revision(),
        "org.opencontainers.image.base.name": base_ref,
        "org.opencontainers.image.vendor": "npubox",
        "npubox.env": spec.name,
        "npubox.spec-hash": loaded.content_hash,
        "npubox.llm-version": llm.__version__,
        "npubox.accelerator": spec.accelerator,
        "npubox.python": spec.python,
    }
    if spec.cann:
        out["npubox.cann"] = spec.cann.version
    for src in spec.sources:
        out[f"npubox.source.{src.name}"] = src.commit
    for name, version in loaded.pins().items():
        out[f"npubox.pin.{name}"] = version
    return out


def baked_spec(loaded: LoadedSpec) -> dict:
    """What the image carries at /etc/npubox/spec.json for `python -m llm env --verify`."""
    return {
        "env": loaded.name,
        "tag": loaded.tag,
        "spec_hash": loaded.content_hash,
        "spec": loaded.spec.model_dump(mode="json"),
        "pins": loaded.pins(),
    }


def render_dockerfile(loaded: LoadedSpec) -> str:
    text = DOCKERFILE.read_text()
    env_lines = []
    for key, value in sorted(loaded.spec.env.items()):
        if "\n" in value:
            raise NpuboxError(f"{loaded.path}: field `env.{key}` contains a newline: expected a single-line value")
        env_lines.append(f"ENV {key}={json.dumps(value)}")
    marker = next(line for line in text.splitlines() if line.startswith("# @SPEC_ENV@"))
    return text.replace(marker, "\n".join(env_lines) or "# (the spec sets no environment variables)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheels(loaded: LoadedSpec, site: Site, arch: str, echo: Echo | None = _stderr_echo) -> dict[str, Path]:
    """Download every locked wheel into the cache (offline first); return {sha256: path}."""
    cache = cache_dir() / "wheels" / f"py{loaded.spec.python}-{arch}"
    cache.mkdir(parents=True, exist_ok=True)
    common = ["download", "--no-deps", "--require-hashes", "--only-binary=:all:", "--dest", str(cache),
              "--python-version", loaded.spec.python, "--implementation", "cp", "--progress-bar", "off",
              "-r", str(loaded.lock_path)]  # fmt: skip
    for plat in pip_platforms(arch):
        common += ["--platform", plat]
    offline = subprocess.run([*site.pip(), *common, "--no-index", "--find-links", str(cache)], capture_output=True)
    if offline.returncode != 0:
        cmd = [*site.pip(), *common, *site.pip_find_links_args()]
        if echo:
            echo(" ".join(["pip", *common, *site.pip_find_links_args()]))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = [line for line in proc.stderr.strip().splitlines() if line.startswith("ERROR")] or ["no output"]
            raise NpuboxError(
                f"downloading the locked wheels of {loaded.lock_path.name} failed: {last[-1]}; check the pip index "
                "settings (pip config list) or give a folder of wheels with --wheelhouse"
            )
    wanted = {h.removeprefix("sha256:") for e in loaded.lock for h in e.hashes}
    found: dict[str, Path] = {}
    for path in sorted(cache.iterdir()):
        if path.suffix == ".whl":
            digest = _sha256(path)
            if digest in wanted:
                found[digest] = path
    return found


@dataclass
class BuildContext:
    path: Path
    dockerfile: str
    build_args: dict[str, str]


def prepare_context(loaded: LoadedSpec, base_ref: str, wheels: dict[str, Path], arch: str) -> BuildContext:
    ctx = cache_dir() / "build" / loaded.name
    if ctx.exists():
        shutil.rmtree(ctx)
    (ctx / "wheels").mkdir(parents=True)
    for path in wheels.values():
        target = ctx / "wheels" / path.name
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    shutil.copy2(loaded.lock_path, ctx / "requirements.lock")
    (ctx / "spec.json").write_text(json.dumps(baked_spec(loaded), indent=2, sort_keys=True) + "\n")
    shutil.copytree(LLM_DIR, ctx / "llm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (ctx / "Dockerfile").write_text(render_dockerfile(loaded))
    return BuildContext(ctx, "Dockerfile", {"BASE_IMAGE": base_ref, "PYTHON_VERSION": loaded.spec.python})


def build_image(loaded: LoadedSpec, site: Site, *, echo: Echo | None = _stderr_echo, tag: str | None = None) -> str:
    arch = host_arch()
    if arch not in loaded.spec.arch:
        raise NpuboxError(f"{loaded.path}: field `arch` is {loaded.spec.arch}: this host is {arch}, which it does not list")
    tag = tag or loaded.tag
    _ = loaded.lock  # validates the lock against the spec before any work
    base_ref = resolve_base(loaded, echo=echo)
    wheels = fetch_wheels(loaded, site, arch, echo=echo)
    ctx = prepare_context(loaded, base_ref, wheels, arch)
    args = ["build", "--network", "none", "--tag", tag, "--file", str(ctx.path / ctx.dockerfile)]
    for key, value in ctx.build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    for key, value in labels(loaded, base_ref).items():
        args += ["--label", f"{key}={value}"]
    args.append(str(ctx.path))
    env_hint = f"fix the step shown above and re-run `invoke build-image --env {loaded.name}` (finished steps are cached)"
    docker(args, echo=echo, what=f"building {tag}", hint=env_hint)
    return tag
