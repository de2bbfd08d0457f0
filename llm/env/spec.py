"""The environment spec (`envs/<name>.yaml`): one pinned stack, validated.

Validation errors name the file, the field path, the bad value and what was expected
(see llm.yamlfile). The spec plus its lock file hash into the image tag, so the same spec
gives the same tag on every machine and a changed pin can never hide behind an old tag.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from packaging.utils import canonicalize_name
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

import llm
from llm.errors import NpuboxError
from llm.yamlfile import NAME_RE, NAME_RULE, Strict, load_model

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9,._-]+\])?==([A-Za-z0-9.+!_-]+)$")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?([a-z0-9.+-]*)$")

Arch = Literal["x86_64", "aarch64"]
ENGINE_SOURCES = ("MindSpeed-LLM", "ModelLink")  # where the mindspeed-llm engine's pretrain_gpt.py lives


class Bootstrap(Strict):
    """How to make the base locally with debootstrap when `image` cannot be pulled."""

    suite: str = "bookworm"
    variant: Literal["minbase", "buildd"] = "minbase"
    packages: list[str] = Field(min_length=1)

    def with_packages(self, extra: list[str]) -> Bootstrap:
        return self.model_copy(update={"packages": [*self.packages, *(p for p in extra if p not in self.packages)]})


class Base(Strict):
    image: str = Field(min_length=1, description="a pullable image reference")
    digest: str | None = None
    bootstrap: Bootstrap | None = None

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
            raise ValueError("a digest of the form sha256:<64 hex digits>")
        return v


class Source(Strict):
    """A source checkout pinned by commit."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str = Field(min_length=1)
    ref: str | None = None  # the branch or tag the commit was read from, for humans
    commit: str
    install: Literal["editable", "pythonpath", "copy-into"]
    into: str | None = None  # copy-into: "<source>/<path>", e.g. MindSpeed-LLM/megatron
    subdir: str | None = None  # copy-into: what to copy from this checkout, e.g. megatron
    # Files of this checkout whose requirements go into the lock (e.g. requirements.txt).
    requirements: list[str] = Field(default_factory=list)

    @field_validator("commit")
    @classmethod
    def _commit(cls, v: str) -> str:
        if not SHA_RE.match(v):
            raise ValueError("a full 40-character lowercase hex commit SHA (branch and tag names are not pins)")
        return v

    @field_validator("requirements")
    @classmethod
    def _requirement_files(cls, v: list[str]) -> list[str]:
        for path in v:
            if path.startswith("/") or ".." in path.split("/") or not path.strip():
                raise ValueError(f"paths inside the checkout such as requirements.txt; got {path!r}")
        return v

    @model_validator(mode="after")
    def _into(self):
        if self.install == "copy-into" and not self.into:
            raise ValueError("`into` (where to copy, e.g. MindSpeed-LLM/megatron) when install is copy-into")
        return self


class Cann(Strict):
    version: str
    # True: the base image is a CANN image that already has this version (checked at build).
    # False: install from the vendor installers, file names with {version} and {arch} filled in,
    # e.g. Ascend-cann-toolkit_{version}_linux-{arch}.run (toolkit first, then kernels, nnal).
    in_base: bool = False
    installers: list[str] = Field(default_factory=list)
    min_driver: str | None = None  # oldest Ascend driver (version.info) this CANN runs on
    # The scripts whose exports are baked into the image's ENV, in order: the toolkit's
    # (ascend-toolkit/set_env.sh up to CANN 8.3, cann/set_env.sh from 8.5) and NNAL's
    # nnal/atb/set_env.sh where the stack sources it. Each must exist after the CANN stage.
    set_env: list[str] = Field(default_factory=lambda: ["/usr/local/Ascend/ascend-toolkit/set_env.sh"], min_length=1)

    @model_validator(mode="after")
    def _installers(self):
        if not self.in_base and not self.installers:
            raise ValueError(
                "`installers` (the vendor .run files) when the base image does not bring CANN (in_base: false)"
            )
        for name in self.installers:
            if "/" in name or not name.endswith(".run"):
                raise ValueError(f"installer file names ending in .run, without folders; got {name!r}")
        return self

    def installer_files(self, arch: str) -> list[str]:
        return [n.format(version=self.version, arch=arch) for n in self.installers]

    @field_validator("set_env")
    @classmethod
    def _set_env(cls, v: list[str]) -> list[str]:
        for path in v:
            if not re.fullmatch(r"/usr/local/Ascend/[A-Za-z0-9._/-]+/set_env\.sh", path):
                raise ValueError(f"set_env.sh paths under /usr/local/Ascend; got {path!r}")
        return v


class Spec(Strict):
    name: str
    version: str
    description: str = ""
    accelerator: Literal["npu", "cuda", "cpu"]
    arch: list[Arch] = Field(min_length=1)
    base: Base
    python: str
    requirements: list[str] = Field(min_length=1)
    # The lock file beside the spec; `{arch}` (x86_64, aarch64) for a lock per architecture.
    lock: str
    # Packages the site supplies as wheel files (--wheelhouse), not on any index, so outside the
    # lock: e.g. Ascend's apex, which only its own build script makes.
    site_wheels: list[str] = Field(default_factory=list)
    cann: Cann | None = Field(default=None, validate_default=True)  # validated against `accelerator`
    sources: list[Source] = Field(default_factory=list)
    # The training engine: our loop on megatron-core, or the stack's own MindSpeed-LLM / ModelLink
    # (its pretrain_gpt.py from the pinned source), or MindFormers (its trainer script under msrun).
    engine: Literal["mcore", "mindspeed-llm", "mindformers"] = Field(default="mcore", validate_default=True)
    env: dict[str, str] = Field(default_factory=dict)
    shm_size: str = "1g"
    models: list[str] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("a name of lowercase letters, digits, '.', '_' or '-' (at most 64 characters)")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not VERSION_RE.match(v):
            raise ValueError("a version such as 1.0.0")
        return v

    @field_validator("python")
    @classmethod
    def _python(cls, v: str) -> str:
        if not re.fullmatch(r"3\.\d{1,2}", v):
            raise ValueError("a Python minor version such as 3.11")
        return v

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, v: list[str]) -> list[str]:
        seen = set()
        for i, req in enumerate(v):
            m = PIN_RE.match(req)
            if not m:
                raise ValueError(f"every requirement pinned as name==version; item {i} is {req!r}")
            key = canonicalize_name(m.group(1))
            if key in seen:
                raise ValueError(f"each package once; {m.group(1)!r} appears twice")
            seen.add(key)
        return v

    @field_validator("site_wheels")
    @classmethod
    def _site_wheels(cls, v: list[str], info: ValidationInfo) -> list[str]:
        locked = {canonicalize_name(m.group(1)) for m in map(PIN_RE.match, info.data.get("requirements") or []) if m}
        for i, req in enumerate(v):
            m = PIN_RE.match(req)
            if not m:
                raise ValueError(f"every site wheel pinned as name==version; item {i} is {req!r}")
            if canonicalize_name(m.group(1)) in locked:
                raise ValueError(f"{m.group(1)!r} either in `requirements` (locked) or here (a site wheel), not both")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_VAR_RE.match(key):
                raise ValueError(f"environment variable names of letters, digits and '_'; {key!r} is not one")
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(f"single-line values without control characters; {key} holds {value[:40]!r}")
        return v

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: str) -> str:
        if not re.fullmatch(r"\d+[bkmg]?", v):
            raise ValueError("a size such as 512m or 16g")
        return v

    # Field validators, not a model validator, so that the error names the field (`sources`,
    # `cann`) instead of the whole spec.
    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: list[Source]) -> list[Source]:
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"each source name once; duplicated: {', '.join(dupes)}")
        return v

    @field_validator("cann")
    @classmethod
    def _cann_for_npu(cls, v: Cann | None, info: ValidationInfo) -> Cann | None:
        accelerator = info.data.get("accelerator")  # absent when it failed its own validation
        if accelerator == "npu" and v is None:
            raise ValueError("a `cann` section (version, installers) for accelerator npu")
        if accelerator in ("cuda", "cpu") and v is not None:
            raise ValueError(f"no `cann` section for accelerator {accelerator} (CANN is for npu only)")
        return v

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str, info: ValidationInfo) -> str:
        if v == "mindspeed-llm":
            if info.data.get("accelerator") not in ("npu", None):
                raise ValueError("engine mcore for a cpu or cuda stack (mindspeed-llm runs on Ascend NPUs)")
            names = {s.name for s in info.data.get("sources") or []}
            if "sources" in info.data and not names & set(ENGINE_SOURCES):
                raise ValueError(f"a source named {' or '.join(ENGINE_SOURCES)} for engine mindspeed-llm")
        if v == "mindformers":
            if info.data.get("accelerator") not in ("npu", None):
                raise ValueError("engine mcore for a cpu or cuda stack (mindformers runs on Ascend NPUs)")
            names = {s.name for s in info.data.get("sources") or []}
            if "sources" in info.data and "mindformers" not in names:
                raise ValueError("a source named mindformers for engine mindformers")
        return v


class LockEntry(BaseModel):
    name: str
    version: str
    hashes: list[str]


# A lock's header records the pinned sources whose requirements it resolved, one line each:
#   # source MindSpeed-LLM 3a712f58635be8825189c65a89f27a90dc458765 requirements.txt
LOCK_SOURCE_RE = re.compile(r"^# source (\S+) ([0-9a-f]{40}) (\S+)$")


def parse_lock(path: Path) -> list[LockEntry]:
    """Read a lock with hashes (pip-compile / uv pip compile): `name==version \\` then `--hash=sha256:...` lines."""
    entries: list[LockEntry] = []
    current: LockEntry | None = None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise NpuboxError(
            f"{path}: not a lock file (not UTF-8 text: byte {e.start} is 0x{e.object[e.start]:02x}); "
            "write it again with `invoke lock`"
        ) from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line:
            continue
        if line.startswith("--hash="):
            if current is None:
                raise NpuboxError(f"{path}:{lineno}: a --hash line before any requirement")
            current.hashes.append(line.removeprefix("--hash="))
            continue
        if line.startswith("-"):
            continue  # pip options such as --find-links are site settings, not pins
        m = PIN_RE.match(line.split(";", 1)[0].strip())
        if not m:
            raise NpuboxError(f"{path}:{lineno}: expected `name==version`, got {raw.strip()!r}")
        current = LockEntry(name=m.group(1), version=m.group(3), hashes=[])
        entries.append(current)
    missing = [e.name for e in entries if not e.hashes]
    if missing:
        raise NpuboxError(
            f"{path}: every pin needs a --hash (builds use --require-hashes); none for {', '.join(missing)}"
        )
    return entries


def lock_sources(path: Path) -> set[tuple[str, str, str]]:
    """(source, commit, file) of every source requirements file the lock at ``path`` resolved."""
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = LOCK_SOURCE_RE.match(line)
        if m:
            found.add(m.groups())
    return found


def render_lock(entries: list[LockEntry], header: str) -> str:
    """Entries as a lock file pip installs with --require-hashes."""
    lines = [header.rstrip("\n")] if header else []
    for e in entries:
        lines.append(f"{e.name}=={e.version} \\")
        lines += [f"    --hash={h}" + (" \\" if i < len(e.hashes) - 1 else "") for i, h in enumerate(e.hashes)]
    return "\n".join(lines) + "\n"


class LoadedSpec:
    """A validated spec with the file it came from, for one CPU architecture, and its lock.

    A CPU twin (:mod:`llm.env.twin`) is a LoadedSpec too: its spec is derived from a real one
    (``twin_of``), and its lock (resolved from the real lock's pins) lies beside the real one."""

    def __init__(self, spec: Spec, path: Path, arch: str | None = None, twin_of: LoadedSpec | None = None):
        from llm.env.arch import check_arch, host_arch

        self.spec = spec
        self.path = path
        self.arch = check_arch(arch, spec.arch, path) if arch else host_arch()
        self.twin_of = twin_of

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def lock_path(self) -> Path:
        return self.path.parent / self.spec.lock.format(arch=self.arch)

    @property
    def env_args(self) -> str:
        """How a command line names this spec: `--env E`, or `--env E --twin cpu` for a twin."""
        return f"--env {self.twin_of.name} --twin cpu" if self.twin_of is not None else f"--env {self.name}"

    @property
    def lock_hint(self) -> str:
        real = self.twin_of or self
        arch = f" --arch {self.arch}" if "{arch}" in real.spec.lock else ""
        cache = " --source-cache DIR" if any(s.requirements for s in real.spec.sources) and not self.twin_of else ""
        return f"invoke lock {self.env_args}{arch}{cache}"

    @cached_property
    def lock(self) -> list[LockEntry]:
        if not self.lock_path.is_file():
            raise NpuboxError(
                f"{self.path}: lock file {self.lock_path} does not exist; run `{self.lock_hint}` to create it"
            )
        entries = parse_lock(self.lock_path)
        locked = {canonicalize_name(e.name): e.version for e in entries}
        for req in self.spec.requirements:
            m = PIN_RE.match(req)
            name, version = canonicalize_name(m.group(1)), m.group(3)
            if locked.get(name) != version:
                raise NpuboxError(
                    f"{self.lock_path}: out of date with {self.path}: requirement {req} is locked as "
                    f"{locked.get(name, 'absent')}; run `{self.lock_hint}`"
                )
        wanted = {(s.name, s.commit, f) for s in self.spec.sources for f in s.requirements}
        stale = sorted(wanted - lock_sources(self.lock_path))
        if stale:
            name, commit, file = stale[0]
            raise NpuboxError(
                f"{self.lock_path}: out of date with {self.path}: it did not resolve {file} of source {name} at "
                f"{commit[:12]}; run `{self.lock_hint}`"
            )
        return entries

    def requirement_pins(self) -> dict[str, str]:
        """The spec's own pins (what the lock must agree with), readable without the lock."""
        return {canonicalize_name(m.group(1)): m.group(3) for m in map(PIN_RE.match, self.spec.requirements)}

    def site_wheel_pins(self) -> dict[str, str]:
        return {canonicalize_name(m.group(1)): m.group(3) for m in map(PIN_RE.match, self.spec.site_wheels)}

    def pins(self) -> dict[str, str]:
        return {canonicalize_name(e.name): e.version for e in self.lock} | self.site_wheel_pins()

    def known_pins(self) -> dict[str, str]:
        """The lock's pins once there is a lock, else the spec's own (requirements and site wheels)."""
        return self.pins() if self.lock_path.is_file() else self.requirement_pins() | self.site_wheel_pins()

    @cached_property
    def content_hash(self) -> str:
        """sha256 over the spec's canonical content, the lock and the llm package version.

        Canonical JSON, not the YAML bytes: comments, key order and the file's location do not
        change the tag; any pin does."""
        h = hashlib.sha256()
        h.update(json.dumps(self.spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\0arch\0" + self.arch.encode() if "{arch}" in self.spec.lock else b"")
        h.update(b"\0lock\0")
        h.update(
            "\n".join(
                f"{canonicalize_name(e.name)}=={e.version} {' '.join(sorted(e.hashes))}" for e in self.lock
            ).encode()
        )
        h.update(b"\0llm\0" + llm.__version__.encode())
        return h.hexdigest()

    @property
    def tag(self) -> str:
        return f"npubox/{self.name}:{self.spec.version}-{self.content_hash[:12]}"


def load_spec_file(path: Path | str, arch: str | None = None) -> LoadedSpec:
    path = Path(path)
    spec = load_model(path, Spec)
    if spec.name != path.stem:
        raise NpuboxError(f"{path}: field `name` is {spec.name!r}: expected the file's own name {path.stem!r}")
    return LoadedSpec(spec, path, arch)


def envs_dir() -> Path:
    """The envs/ folder of the checkout (or NPUBOX_ENVS_DIR)."""
    import os

    override = os.environ.get("NPUBOX_ENVS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "envs"


def env_names(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or envs_dir()).glob("*.yaml"))


def load_spec(name: str, directory: Path | None = None, arch: str | None = None) -> LoadedSpec:
    """The spec ``envs/<name>.yaml`` for ``arch`` (default: this host's)."""
    directory = directory or envs_dir()
    if not NAME_RE.match(name or ""):
        raise NpuboxError(f"env name {name!r} is not valid: use {NAME_RULE}")
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise NpuboxError(f"unknown env {name!r}; known envs: {', '.join(env_names(directory)) or '(none)'}")
    return load_spec_file(path, arch)
