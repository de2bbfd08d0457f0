"""The build plan: every input of an image gathered once — base, lock, wheels, CANN installers,
pinned sources — with whether each is present and where to put it if not, the stages, the build
arguments and the labels. `invoke build-image --dry-run` prints it; the build checks it
(``require``) and then runs it (llm.env.image)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from llm.env.arch import GLIBC, GLIBC_BOOKWORM, pip_platforms
from llm.env.labels import labels
from llm.env.site import Site, cache_dir
from llm.env.spec import LoadedSpec, Source
from llm.env.wheel_file import wheel_problem
from llm.errors import NpuboxError

# Where each kind of site wheel comes from, for the plan's "to do" column.
SITE_WHEEL_HOWTO = {
    "apex": "build Ascend's apex for this Python (gitcode.com/Ascend/apex: `bash scripts/build.sh --python={python}`, "
    "which patches NVIDIA apex) and put the apex-{version}-*.whl in a folder passed with --wheelhouse DIR",
    # The file MindSpore's install page (mindspore.cn/install, "pip" for that version) links, under
    # ms-release.obs.cn-north-4.myhuaweicloud.com/{version}/MindSpore/unified/{arch}/.
    "mindspore": "download mindspore-{version}-cp{py}-cp{py}-linux_{arch}.whl from MindSpore's release site "
    "(mindspore.cn/versions: {version}, MindSpore, unified, {arch}) and pass its folder with --wheelhouse DIR",
}


@dataclass(frozen=True)
class BuildInputs:
    """Folders the user points the build at: CANN installers and a cache of pinned sources."""

    vendor: Path | None = None  # CANN installers (.run)
    source_cache: Path | None = None  # git mirrors / archives of the pinned sources
    allow_unverified_sources: bool = False  # build an archive whose commit cannot be shown (labelled so)


@dataclass(frozen=True)
class PlannedInput:
    what: str
    status: str  # present | missing | bad | pull | index | fetch | unknown
    where: str
    todo: str = ""


@dataclass
class BuildPlan:
    loaded: LoadedSpec
    site: Site
    build_inputs: BuildInputs
    arch: str
    tag: str
    stages: list[str]
    inputs: list[PlannedInput]
    labels: dict[str, str] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)  # a twin's, from its real stack
    installers: list[Path] = field(default_factory=list)  # CANN .run files, in install order
    site_wheels: list[Path] = field(default_factory=list)

    @property
    def env(self) -> str:
        return self.loaded.name

    @property
    def missing(self) -> list[PlannedInput]:
        """The inputs the build cannot start without: those not there and those there but bad."""
        return [i for i in self.inputs if i.status in ("missing", "bad")]

    @property
    def cann_mode(self) -> str:
        """Which CANN stage the Dockerfile takes: none, base (the base image brings it) or installers."""
        cann = self.loaded.spec.cann
        return "none" if cann is None else ("base" if cann.in_base else "installers")

    def require(self) -> None:
        """Refuse to build, with one sentence, when the host or an input does not fit."""
        spec = self.loaded.spec
        if self.arch not in spec.arch:
            raise NpuboxError(
                f"{self.loaded.path}: field `arch` is {spec.arch}: this host is {self.arch}, which it does not list"
            )
        _ = self.loaded.lock  # a missing or stale lock names the command that makes it
        first = next(iter(self.missing), None)
        if first is not None:
            more = (
                f" (and {len(self.missing) - 1} more: `invoke build-image {self.loaded.env_args} --dry-run` lists them)"
            )
            raise NpuboxError(f"{first.what} is {first.status}: {first.todo}" + (more if len(self.missing) > 1 else ""))


def _docker_ready() -> bool:
    from llm.env.engine import ensure_daemon

    try:
        ensure_daemon()
    except NpuboxError:
        return False
    return True


def _base_input(loaded: LoadedSpec) -> PlannedInput:
    from llm.env.base import bootstrap_tag
    from llm.env.engine import image_exists

    base = loaded.spec.base
    ref = f"{base.image}@{base.digest}" if base.digest else base.image
    if not _docker_ready():
        return PlannedInput("base image", "unknown", ref, "start dockerd to see whether it is present")
    if image_exists(ref):
        return PlannedInput("base image", "present", ref)
    if base.bootstrap and image_exists(bootstrap_tag(base.bootstrap)):
        return PlannedInput(
            "base image", "present", f"{bootstrap_tag(base.bootstrap)} (bootstrapped {base.bootstrap.suite})"
        )
    if base.bootstrap:
        return PlannedInput("base image", "pull", ref, f"if it cannot be pulled: `invoke base-image {loaded.env_args}`")
    return PlannedInput(
        "base image", "pull", ref, "if the registry is unreachable: `docker load -i` the image's archive"
    )


def _wheel_is(path: Path, name: str, version: str) -> bool:
    try:
        wheel_name, wheel_version, _build, _tags = parse_wheel_filename(path.name)
    except (InvalidWheelFilename, InvalidVersion):
        return False
    return wheel_name == canonicalize_name(name) and wheel_version == Version(version)


def find_wheels(folders: list[Path], name: str, version: str) -> list[Path]:
    """The files whose wheel file name says ``name`` ``version``, folder by folder."""
    return [p for d in folders if d.is_dir() for p in sorted(d.glob("*.whl")) if _wheel_is(p, name, version)]


def wheel_cache(loaded: LoadedSpec) -> Path:
    return cache_dir() / "wheels" / f"py{loaded.spec.python}-{loaded.arch}"


def image_platforms(loaded: LoadedSpec) -> list[str]:
    """The platform tags the image's glibc accepts: Debian bookworm's (a bootstrapped base), else a CANN image's
    (Ubuntu 22.04)."""
    return pip_platforms(loaded.arch, GLIBC_BOOKWORM if loaded.spec.base.bootstrap else GLIBC[1])


def _wheel_input(
    loaded: LoadedSpec, what: str, name: str, version: str, folders: list[Path], absent: PlannedInput
) -> PlannedInput:
    """The first file in ``folders`` named as ``name`` ``version``'s wheel that holds it, for the image's Python and
    platform; else the first such file's problem (pip would take it and fail); ``absent`` when none is named so."""
    python, platforms = loaded.spec.python, image_platforms(loaded)
    files = find_wheels(folders, name, version)
    problems = []
    for path in files:
        problem = wheel_problem(path, python, loaded.arch, platforms)
        if problem is None:
            return PlannedInput(what, "present", str(path))
        problems.append(f"{path} {problem}")
    if not problems:
        return absent
    others = f" (and {len(problems) - 1} more such file(s))" if len(problems) > 1 else ""
    return PlannedInput(
        what,
        "bad",
        str(files[0]),
        f"{problems[0]}{others}; remove it, or put there the {name} {version} wheel built for CPython {python} "
        f"on {loaded.arch}",
    )


def _wheel_inputs(loaded: LoadedSpec, site: Site) -> tuple[list[PlannedInput], list[Path]]:
    out, found = [], []
    for name, version in loaded.requirement_pins().items():
        what = f"wheel {name}=={version}"
        index = PlannedInput(what, "index", "the package index pip is configured with on this host")
        out.append(_wheel_input(loaded, what, name, version, [*site.wheelhouse, wheel_cache(loaded)], index))
    for name, version in loaded.site_wheel_pins().items():
        what = f"site wheel {name}=={version}"
        howto = SITE_WHEEL_HOWTO.get(
            name,
            "put the {name}-{version}-*.whl built for Python {python} in a folder and pass it with --wheelhouse DIR",
        )
        absent = PlannedInput(
            what,
            "missing",
            "--wheelhouse",
            howto.format(
                name=name,
                version=version,
                python=loaded.spec.python,
                py=loaded.spec.python.replace(".", ""),
                arch=loaded.arch,
            ),
        )
        item = _wheel_input(loaded, what, name, version, site.wheelhouse, absent)
        out.append(item)
        if item.status == "present":
            found.append(Path(item.where))
    return out, found


def _source_input(src: Source, source_cache: Path | None) -> PlannedInput:
    from llm.env.sources import locate

    located = locate(src, source_cache)
    what = f"source {src.name} @ {src.commit[:12]} ({src.install})"
    if located.kind == "url":
        return PlannedInput(
            what,
            "fetch",
            src.url,
            f"offline: put {src.name}.git (a mirror) or "
            f"{src.name}-{src.commit}.tar.gz in a folder and pass --source-cache DIR",
        )
    return PlannedInput(what, "present", located.where)


def _stages(plan_loaded: LoadedSpec, cann_mode: str) -> list[str]:
    spec = plan_loaded.spec
    stages = [f"os: {spec.base.image}, Python {spec.python}, user npubox (uid 1000)"]
    if cann_mode == "installers":
        stages.append(
            f"cann: CANN {spec.cann.version} from {len(spec.cann.installers)} vendor installer(s) in a "
            "throwaway stage; " + ", ".join(spec.cann.set_env) + " baked into ENV"
        )
    elif cann_mode == "base":
        stages.append(
            f"cann: CANN {spec.cann.version} from the base image (version checked); "
            + ", ".join(spec.cann.set_env)
            + " baked into ENV"
        )
    site = f" + {len(spec.site_wheels)} site wheel(s)" if spec.site_wheels else ""
    stages.append(
        f"deps: the lock ({len(spec.requirements)} pinned requirements and what they need){site}, "
        "pip --require-hashes, offline, in a container with the wheels mounted read-only (no wheel enters a layer)"
    )
    if spec.sources:
        stages.append(
            "sources: "
            + ", ".join(
                f"{s.name}@{s.commit[:7]} {s.install}" + (f" -> {s.into}" if s.into else "") for s in spec.sources
            )
            + (
                "; Megatron's dataset helpers compiled"
                if any("megatron" in s.name.lower() for s in spec.sources)
                else ""
            )
        )
    stages.append("image: venv, ENV (CANN, spec), /etc/npubox/spec.json, llm package (last)")
    return stages


def make_plan(loaded: LoadedSpec, site: Site = Site(), inputs: BuildInputs = BuildInputs()) -> BuildPlan:
    """Look at every input (no network; Docker only to see which images are present)."""
    from llm.env.twin import differences

    spec = loaded.spec
    items = [_base_input(loaded)]
    if loaded.lock_path.is_file():
        items.append(PlannedInput("lock", "present", str(loaded.lock_path)))
    else:
        items.append(
            PlannedInput(
                "lock",
                "missing",
                str(loaded.lock_path),
                f"run `{loaded.lock_hint}` (resolves and hashes every wheel from the package index)",
            )
        )
    wheel_items, site_wheels = _wheel_inputs(loaded, site)
    items += wheel_items
    installers = []
    cann = spec.cann
    if cann is not None and not cann.in_base:
        for name in cann.installer_files(loaded.arch):
            path = inputs.vendor / name if inputs.vendor and (inputs.vendor / name).is_file() else None
            if path:
                installers.append(path)
                items.append(PlannedInput(f"CANN installer {name}", "present", str(path)))
            else:
                items.append(
                    PlannedInput(
                        f"CANN installer {name}",
                        "missing",
                        str(inputs.vendor or "vendor folder"),
                        f"download {name} from the Ascend site into a folder and pass --vendor DIR",
                    )
                )
    items += [_source_input(src, inputs.source_cache) for src in spec.sources]
    locked = loaded.lock_path.is_file()
    plan = BuildPlan(
        loaded=loaded,
        site=site,
        build_inputs=inputs,
        arch=loaded.arch,
        tag=loaded.tag if locked else f"npubox/{spec.name}:{spec.version}-<after lock>",
        stages=[],
        inputs=items,
        labels=labels(loaded, spec.base.image),
        differences=differences(loaded) if loaded.twin_of is not None else [],
        installers=installers,
        site_wheels=site_wheels,
    )
    plan.stages = _stages(loaded, plan.cann_mode)
    return plan


def print_plan(plan: BuildPlan) -> None:
    from rich.console import Console
    from rich.text import Text

    from llm.tables import print_table

    console = Console()
    console.print(f"[bold]build plan[/] for env {plan.env} on {plan.arch}: {plan.tag}", soft_wrap=True)
    if plan.differences:
        print_table(
            ["differs from " + plan.loaded.twin_of.name],
            [[d] for d in plan.differences],
            title="CPU twin",
            console=console,
        )
    print_table(["stage"], [[s] for s in plan.stages], title="stages (least to most often changed)", console=console)
    colors = {"present": "green", "missing": "red", "bad": "red", "unknown": "yellow"}
    print_table(
        ["input", "status", "where", "to do"],
        [[i.what, Text(i.status, style=colors.get(i.status, "cyan")), i.where, i.todo] for i in plan.inputs],
        title="inputs",
        console=console,
    )
    print_table(["label", "value"], sorted(plan.labels.items()), title="labels", console=console)
    if plan.missing:
        console.print(
            f"[red]{len(plan.missing)} input(s) missing or bad[/]: the build would stop; see 'to do' above.",
            soft_wrap=True,
        )
    else:
        console.print("[green]nothing missing[/]: `invoke build-image` would start.", soft_wrap=True)
