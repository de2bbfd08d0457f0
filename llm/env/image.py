"""Spec → image: collect the locked inputs on the host, then build offline.

The host's pip (with the site's index, find-links, CA bundle and proxies) downloads exactly the
locked wheels into a cache; the build context holds those wheels, the lock, the spec and the
llm package; `docker build --network none` turns them into the image. Site settings are used on
the host only, so they can never end up in a layer, a label or the image history.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import llm
from llm.digest import sha256_file
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
        "npubox.spec-hash": loaded.content_hash if loaded.lock_path.is_file() else "(computed once the lock exists)",
        "npubox.llm-version": llm.__version__,
        "npubox.accelerator": spec.accelerator,
        "npubox.python": spec.python,
    }
    if spec.cann:
        out["npubox.cann"] = spec.cann.version
    for src in spec.sources:
        out[f"npubox.source.{src.name}"] = src.commit
    pins = loaded.pins() if loaded.lock_path.is_file() else loaded.requirement_pins()
    for name, version in pins.items():
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


def _env_line(key: str, value: str, where: str) -> str:
    if "\n" in value:
        raise NpuboxError(f"{where}: field `env.{key}` contains a newline: expected a single-line value")
    return f"ENV {key}={json.dumps(value, ensure_ascii=False)}"  # UTF-8 as is: Docker reads no \\u escapes


def dockerfile_blocks(loaded: LoadedSpec) -> set[str]:
    spec = loaded.spec
    cann = "no-cann" if spec.cann is None else ("cann-in-base" if spec.cann.in_base else "cann-installers")
    return {cann, "sources" if spec.sources else "no-sources"}


def render_dockerfile(loaded: LoadedSpec, cann_env: dict[str, str] | None = None) -> str:
    """containers/Dockerfile with the spec's blocks kept and its ENV lines filled in."""
    keep = dockerfile_blocks(loaded)
    out: list[str] = []
    block: str | None = None
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("#@"):
            tag = line[2:].split()[0]
            if tag == "end":
                block = None
            elif tag == "cann-env":
                out += [_env_line(k, v, "CANN set_env.sh") for k, v in sorted((cann_env or {}).items())]
            elif tag == "spec-env":
                out += [_env_line(k, v, str(loaded.path)) for k, v in sorted(loaded.spec.env.items())]
                paths = ["/opt/npubox/src"] + [f"/opt/npubox/sources/{s.name}" for s in loaded.spec.sources
                                               if s.install == "pythonpath"]
                tail = ":$PYTHONPATH" if cann_env and "PYTHONPATH" in cann_env else ""
                out.append(f"ENV PYTHONPATH={':'.join(paths)}{tail}")
            else:
                block = tag
            continue
        if block is None or block in keep:
            out.append(line)
    return "\n".join(out) + "\n"


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
            digest = sha256_file(path)
            if digest in wanted:
                found[digest] = path
    return found


@dataclass
class BuildInputs:
    """Everything a build needs, gathered on the host (vendor folder, source cache, wheelhouse)."""

    vendor: Path | None = None  # CANN installers (.run)
    source_cache: Path | None = None  # git mirrors / archives of the pinned sources


def cann_installers(loaded: LoadedSpec, vendor: Path | None, arch: str) -> list[tuple[str, Path | None]]:
    """(file name, path or None when missing) for each CANN installer the spec needs, in order."""
    cann = loaded.spec.cann
    if cann is None or cann.in_base:
        return []
    return [(name, (vendor / name) if vendor and (vendor / name).is_file() else None) for name in cann.installer_files(arch)]


def require_installers(loaded: LoadedSpec, vendor: Path | None, arch: str) -> list[Path]:
    found = cann_installers(loaded, vendor, arch)
    missing = [name for name, path in found if path is None]
    if missing:
        raise NpuboxError(
            f"CANN {loaded.spec.cann.version} installers missing from the vendor folder {vendor or '(none given)'}: "
            f"{', '.join(missing)}; download them from the Ascend site and pass the folder with --vendor"
        )
    return [path for _, path in found]


@dataclass
class BuildContext:
    path: Path
    build_args: dict[str, str]


def prepare_context(loaded: LoadedSpec, base_ref: str, wheels: dict[str, Path], installers: list[Path],
                    inputs: BuildInputs = BuildInputs(), echo: Echo | None = _stderr_echo) -> BuildContext:
    from llm.env.sources import export_source

    ctx = cache_dir() / "build" / loaded.name
    if ctx.exists():
        shutil.rmtree(ctx)
    (ctx / "wheels").mkdir(parents=True)

    def place(src: Path, target: Path) -> None:
        try:
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)

    for path in wheels.values():
        place(path, ctx / "wheels" / path.name)
    build_args = {"BASE_IMAGE": base_ref, "PYTHON_VERSION": loaded.spec.python}
    if loaded.spec.cann:
        build_args["CANN_VERSION"] = loaded.spec.cann.version
        shutil.copy2(DOCKERFILE.parent / "install-cann.sh", ctx / "install-cann.sh")
        if installers:
            (ctx / "cann").mkdir()
            for path in installers:
                place(path, ctx / "cann" / path.name)
            (ctx / "cann" / "order.txt").write_text("".join(f"{p.name}\n" for p in installers))
    if loaded.spec.sources:
        (ctx / "sources").mkdir()
        shutil.copy2(DOCKERFILE.parent / "install-sources.sh", ctx / "install-sources.sh")
        rows = []
        for src in loaded.spec.sources:
            archive = export_source(src, inputs.source_cache, ctx / "sources", echo=echo)
            rows.append("\t".join([src.name, src.commit, src.install, src.subdir or "-", src.into or "-", archive.name]))
        (ctx / "sources" / "manifest.tsv").write_text("\n".join(rows) + "\n")
    shutil.copy2(loaded.lock_path, ctx / "requirements.lock")
    (ctx / "spec.json").write_text(json.dumps(baked_spec(loaded), indent=2, sort_keys=True) + "\n")
    shutil.copytree(LLM_DIR, ctx / "llm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (ctx / "Dockerfile").write_text(render_dockerfile(loaded))
    return BuildContext(ctx, build_args)


def _build_args(ctx: BuildContext, tag: str, target: str | None = None) -> list[str]:
    args = ["build", "--network", "none", "--tag", tag, "--file", str(ctx.path / "Dockerfile")]
    if target:
        args += ["--target", target]
    for key, value in ctx.build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    return args


def capture_cann_env(image: str, echo: Echo | None = _stderr_echo) -> dict[str, str]:
    """What CANN's set_env.sh scripts export, read by sourcing them in the CANN stage.

    Baked into the image's ENV because `docker exec` and testinfra do not read .bashrc."""
    script = (
        ". /usr/local/Ascend/ascend-toolkit/set_env.sh >/dev/null 2>&1; "
        "[ -f /usr/local/Ascend/nnal/atb/set_env.sh ] && . /usr/local/Ascend/nnal/atb/set_env.sh >/dev/null 2>&1; "
        "env -0"
    )
    before = docker(["run", "--rm", "--network", "none", "--entrypoint", "env", image, "-0"], echo=echo,
                    capture=True, what="reading the CANN stage's environment").stdout  # fmt: skip
    after = docker(["run", "--rm", "--network", "none", "--entrypoint", "bash", image, "-c", script], echo=echo,
                   capture=True, what="sourcing CANN's set_env.sh").stdout  # fmt: skip

    def parse(blob: str) -> dict[str, str]:
        return dict(item.split("=", 1) for item in blob.split("\0") if "=" in item)

    old, new = parse(before), parse(after)
    return {k: v for k, v in new.items() if old.get(k) != v and k not in ("SHLVL", "_", "PWD", "OLDPWD")}


def build_image(loaded: LoadedSpec, site: Site, *, echo: Echo | None = _stderr_echo, tag: str | None = None,
                inputs: BuildInputs = BuildInputs()) -> str:
    arch = host_arch()
    if arch not in loaded.spec.arch:
        raise NpuboxError(f"{loaded.path}: field `arch` is {loaded.spec.arch}: this host is {arch}, which it does not list")
    tag = tag or loaded.tag
    _ = loaded.lock  # validates the lock against the spec before any work
    installers = require_installers(loaded, inputs.vendor, arch)  # before any work: they are the largest input
    base_ref = resolve_base(loaded, echo=echo)
    wheels = fetch_wheels(loaded, site, arch, echo=echo)
    ctx = prepare_context(loaded, base_ref, wheels, installers, inputs, echo=echo)
    hint = f"fix the step shown above and re-run `invoke build-image --env {loaded.name}` (finished steps are cached)"
    if loaded.spec.cann:
        stage = f"npubox-stage/{loaded.name}-cann:{loaded.content_hash[:12]}"
        docker([*_build_args(ctx, stage, target="cann"), str(ctx.path)], echo=echo, what=f"building the CANN stage of {tag}", hint=hint)
        (ctx.path / "Dockerfile").write_text(render_dockerfile(loaded, capture_cann_env(stage, echo=echo)))
    args = _build_args(ctx, tag)
    for key, value in labels(loaded, base_ref).items():
        args += ["--label", f"{key}={value}"]
    docker([*args, str(ctx.path)], echo=echo, what=f"building {tag}", hint=hint)
    if loaded.spec.cann:
        docker(["rmi", stage], echo=echo, check=False, capture=True)  # only the name: its layers are the image's
    return tag
