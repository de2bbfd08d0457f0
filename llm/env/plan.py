"""`invoke build-image --dry-run`: the stages, every input, which are missing and where to put
them, and the labels the image will carry — before any build starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from llm.env.image import BuildInputs, cann_installers, dockerfile_blocks, host_arch, labels
from llm.env.site import Site, cache_dir
from llm.env.spec import LoadedSpec
from llm.errors import NpuboxError


@dataclass(frozen=True)
class PlannedInput:
    what: str
    status: str  # present | missing | pull | index | fetch | unknown
    where: str
    todo: str = ""


@dataclass
class BuildPlan:
    env: str
    tag: str
    arch: str
    stages: list[str]
    inputs: list[PlannedInput]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[PlannedInput]:
        return [i for i in self.inputs if i.status == "missing"]


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
        return PlannedInput("base image", "present", f"{bootstrap_tag(base.bootstrap)} (bootstrapped {base.bootstrap.suite})")
    if base.bootstrap:
        return PlannedInput("base image", "pull", ref, f"if it cannot be pulled: `invoke base-image --env {loaded.name}`")
    return PlannedInput("base image", "pull", ref, "if the registry is unreachable: `docker load -i` the image's archive")


def _wheel_is(path: Path, name: str, version: str) -> bool:
    try:
        wheel_name, wheel_version, _build, _tags = parse_wheel_filename(path.name)
    except (InvalidWheelFilename, InvalidVersion):
        return False
    return wheel_name == canonicalize_name(name) and wheel_version == Version(version)


def _wheel_inputs(loaded: LoadedSpec, site: Site) -> list[PlannedInput]:
    folders = [*site.wheelhouse, cache_dir() / "wheels" / f"py{loaded.spec.python}-{host_arch()}"]
    out = []
    for name, version in loaded.requirement_pins().items():
        hit = next((p for d in folders if d.is_dir() for p in sorted(d.glob("*.whl"))
                    if _wheel_is(p, name, version)), None)  # fmt: skip
        what = f"wheel {name}=={version}"
        if hit:
            out.append(PlannedInput(what, "present", str(hit)))
        elif "+" in version:  # a local build (torch_npu/apex for Ascend, torch+cpu): never on a public index
            out.append(PlannedInput(what, "missing", "wheelhouse",
                                    f"put the {name} {version} wheel for Python {loaded.spec.python} in a folder "
                                    "and pass it with --wheelhouse DIR"))  # fmt: skip
        else:
            out.append(PlannedInput(what, "index", "the pip index configured on this host"))
    return out


def make_plan(loaded: LoadedSpec, site: Site = Site(), inputs: BuildInputs = BuildInputs(),
              arch: str | None = None) -> BuildPlan:
    from llm.env.sources import locate

    arch = arch or host_arch()
    spec = loaded.spec
    items = [_base_input(loaded)]
    if loaded.lock_path.is_file():
        items.append(PlannedInput("lock", "present", str(loaded.lock_path)))
    else:
        items.append(PlannedInput("lock", "missing", str(loaded.lock_path),
                                  f"run `invoke lock --env {loaded.name} --wheelhouse DIR` with Python {spec.python} "
                                  "(resolves and hashes every wheel, including the wheelhouse ones)"))  # fmt: skip
    items += _wheel_inputs(loaded, site)
    for name, path in cann_installers(loaded, inputs.vendor, arch):
        if path:
            items.append(PlannedInput(f"CANN installer {name}", "present", str(path)))
        else:
            items.append(PlannedInput(f"CANN installer {name}", "missing", str(inputs.vendor or "vendor folder"),
                                      f"download {name} from the Ascend site into a folder and pass --vendor DIR"))
    for src in spec.sources:
        located = locate(src, inputs.source_cache)
        what = f"source {src.name} @ {src.commit[:12]} ({src.install})"
        if located.kind == "url":
            items.append(PlannedInput(what, "fetch", src.url,
                                      f"offline: put {src.name}.git (a mirror) or {src.name}-{src.commit}.tar.gz "
                                      "in a folder and pass --source-cache DIR"))  # fmt: skip
        else:
            items.append(PlannedInput(what, "present", located.where))

    blocks = dockerfile_blocks(loaded)
    stages = [f"os: {spec.base.image}, Python {spec.python}, user npubox (uid 1000)"]
    if "cann-installers" in blocks:
        stages.append(f"cann: CANN {spec.cann.version} from {len(spec.cann.installers)} vendor installer(s), "
                      "set_env.sh baked into ENV")  # fmt: skip
    elif "cann-in-base" in blocks:
        stages.append(f"cann: CANN {spec.cann.version} from the base image (version checked), set_env.sh baked into ENV")
    stages.append(f"deps: {len(spec.requirements)} pinned requirements via the lock, pip --require-hashes, offline")
    if spec.sources:
        stages.append("sources: " + ", ".join(f"{s.name}@{s.commit[:7]} {s.install}" +
                                              (f" -> {s.into}" if s.into else "") for s in spec.sources))  # fmt: skip
    stages.append("image: venv, spec env, /etc/npubox/spec.json, llm package (last)")
    return BuildPlan(spec.name, loaded.tag if loaded.lock_path.is_file() else f"npubox/{spec.name}:{spec.version}-<after lock>",
                     arch, stages, items, labels(loaded, spec.base.image))  # fmt: skip


def print_plan(plan: BuildPlan) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]build plan[/] for env {plan.env} on {plan.arch}: {plan.tag}")
    stages = Table("stage", title="stages (least to most often changed)")
    for s in plan.stages:
        stages.add_row(s)
    console.print(stages)
    table = Table("input", "status", "where", "to do", title="inputs")
    colors = {"present": "green", "missing": "red", "unknown": "yellow"}
    for i in plan.inputs:
        table.add_row(i.what, f"[{colors.get(i.status, 'cyan')}]{i.status}[/]", i.where, i.todo)
    console.print(table)
    lab = Table("label", "value", title="labels")
    for k, v in sorted(plan.labels.items()):
        lab.add_row(k, v)
    console.print(lab)
    if plan.missing:
        console.print(f"[red]{len(plan.missing)} input(s) missing[/]: the build would stop; see 'to do' above.")
    else:
        console.print("[green]nothing missing[/]: `invoke build-image` would start.")
