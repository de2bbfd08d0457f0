"""What each `invoke` task does, callable without Invoke (tasks.py only parses and prints)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from llm.__main__ import PHASES as LLM_PHASES
from llm.env import container, transfer
from llm.env.base import ensure_base
from llm.env.devices import device_flags
from llm.env.engine import _stderr_echo, docker, ensure_daemon
from llm.env.labels import REPO_ROOT
from llm.env.multinode import Launch, phase_command
from llm.env.site import Site
from llm.env.spec import LoadedSpec, env_names, load_spec
from llm.errors import NpuboxError
from llm.workspace import host_default

# What `invoke run --phase` accepts: the container's phases (llm/__main__.py) that take --model.
PHASES = tuple(p for p in LLM_PHASES if p != "recipe")
DEFAULT_WORKSPACE = host_default()


def resolve(env: str, twin: str | None = None, arch: str | None = None) -> LoadedSpec:
    """The env's spec, or with ``twin`` ("cpu") its CPU twin (llm.env.twin)."""
    loaded = load_spec(env, arch=arch)
    if twin:
        from llm.env.twin import make_twin

        return make_twin(loaded, twin)
    return loaded


def list_envs() -> list[tuple[str, str, str, str]]:
    rows = []
    for name in env_names():
        loaded = load_spec(name)
        rows.append((name, loaded.spec.accelerator, loaded.spec.version, loaded.spec.description))
    return rows


def list_models() -> list[tuple[str, str, str, str]]:
    from llm.recipes import load_recipe, recipe_names

    rows = []
    for name in recipe_names():
        r = load_recipe(name)
        a = r.architecture
        shape = (
            f"{a.num_layers}L h{a.hidden_size} ffn{a.ffn_hidden_size} heads{a.num_attention_heads}/{a.num_query_groups}"
        )
        pre = r.defaults("pretrain")
        rows.append((name, r.family, shape, f"TP{pre.tp} PP{pre.pp}"))
    return rows


def base_image(env: str, force_bootstrap: bool = False, twin: str | None = None) -> str:
    loaded = resolve(env, twin)
    ensure_daemon()
    return ensure_base(loaded, force_bootstrap=force_bootstrap)


def source_cache_dir(source_cache: str | None) -> Path | None:
    """--source-cache as a folder that exists: a mistyped one is refused, never silently ignored."""
    if source_cache is None:
        return None
    if not Path(source_cache).is_dir():
        raise NpuboxError(
            f"--source-cache {source_cache}: no such folder; expected a folder of git mirrors (<name>.git) or "
            "archives (<name>-<commit>.tar.gz)"
        )
    return Path(source_cache)


def lock(
    env: str,
    wheelhouse: list[str],
    *,
    arch: str | None = None,
    source_cache: str | None = None,
    twin: str | None = None,
) -> list[Path]:
    """`invoke lock`: resolve the spec's (or its twin's) lock for ``arch`` ("all": every architecture it lists)."""
    from llm.env.lock import write_locks

    loaded = load_spec(env)
    arches = None if arch in (None, "all") else [a.strip() for a in arch.split(",")]
    return write_locks(loaded, Site([Path(w) for w in wheelhouse]), arches, source_cache_dir(source_cache), twin=twin)


def build(
    env: str,
    wheelhouse: list[str],
    *,
    vendor: str | None = None,
    source_cache: str | None = None,
    dry_run: bool = False,
    twin: str | None = None,
    arch: str | None = None,
    allow_unverified_sources: bool = False,
):
    """Build the env's (or its twin's) image, or with dry_run return its BuildPlan without building."""
    from llm.env.plan import BuildInputs, make_plan

    loaded = resolve(env, twin, arch)
    site = Site([Path(w) for w in wheelhouse])
    inputs = BuildInputs(
        vendor=Path(vendor) if vendor else None,
        source_cache=source_cache_dir(source_cache),
        allow_unverified_sources=allow_unverified_sources,
    )
    plan = make_plan(loaded, site, inputs)
    if dry_run:
        return plan
    from llm.env.arch import host_arch

    if arch and arch != host_arch():
        raise NpuboxError(f"--arch {arch}: this host builds {host_arch()} images; use --arch only with --dry-run")
    ensure_daemon()
    from llm.env.image import run_plan

    return run_plan(plan)


def default_model(loaded: LoadedSpec) -> str:
    """The model a run takes when none is named: the env's tiny test model (its first model if it has none)."""
    from llm.recipes import load_recipe

    return next((m for m in loaded.spec.models if load_recipe(m).tiny), loaded.spec.models[0])


def validate_run_request(
    env: str, model: str | None, phase: str, twin: str | None = None, arch: str | None = None
) -> LoadedSpec:
    """Refuse an unknown env, model or phase with the list of valid ones, before touching Docker (no model: the
    env's :func:`default_model`)."""
    from llm.recipes import load_recipe

    loaded = resolve(env, twin, arch)
    if phase not in PHASES:
        raise NpuboxError(f"unknown phase {phase!r}; phases: {', '.join(PHASES)}")
    if model:
        load_recipe(model)
        if model not in loaded.spec.models:
            raise NpuboxError(
                f"model {model!r} is not supported by env {env!r}; its models: {', '.join(loaded.spec.models)}"
            )
    return loaded


def check_request(workspace: Path, name: str | None) -> None:
    """What can be refused from the command line alone, before Docker is asked anything."""
    container.check_workspace_path(workspace)
    if name is not None:
        container.check_container_name(name)


def run_options(
    loaded: LoadedSpec,
    workspace: Path,
    *,
    image: str | None = None,
    network: str = "none",
    devices: str | None = None,
    name: str | None = None,
) -> container.RunOptions:
    flags, environment = device_flags(loaded, devices)  # first: "this host has no NPUs" beats "image not built"
    tag = container.require_image(loaded, image)
    ws = container.prepare_workspace(workspace)
    return container.RunOptions(
        image=tag,
        workspace=ws,
        env_name=loaded.name,
        shm_size=loaded.spec.shm_size,
        network=network,
        device_flags=tuple(flags),
        environment=environment,
        name=name,
    )


def run_phase(
    env: str,
    model: str | None,
    phase: str,
    extra: list[str],
    workspace: Path,
    *,
    image: str | None = None,
    devices: str | None = None,
    launch: Launch | None = None,
    name: str | None = None,
    twin: str | None = None,
) -> int:
    """Run one phase in a sealed one-off container. Multi-node runs need the host network; nothing else changes."""
    loaded = validate_run_request(env, model, phase, twin)
    model = model or default_model(loaded)
    if launch is not None and not (0 <= launch.node_rank < launch.nnodes):
        raise NpuboxError(
            f"--node-rank {launch.node_rank}: expected 0..{launch.nnodes - 1} for --nnodes {launch.nnodes}"
        )
    check_request(workspace, name)
    ensure_daemon()
    network = "host" if launch is not None and launch.nnodes > 1 else "none"
    opts = run_options(loaded, workspace, image=image, network=network, devices=devices, name=name)
    return container.run(opts, phase_command(model, phase, extra, launch))


def manifest(
    env: str,
    target: str | None,
    nodes: int | str,
    model: str,
    phase: str,
    devices_per_node: int | str | None,
    extra: list[str],
    workspace: str | None = None,
    *,
    master_port: int | str | None = None,
    socket_ifname: str | None = None,
    launch_env: list[str] | tuple[str, ...] = (),
    device_gid: int | str | None = None,
) -> str:
    """`invoke manifest`: the job for ``target`` (default: ascendjob for npu envs, else pytorchjob), every input
    checked before anything is rendered."""
    from llm.manifest import Job, render_manifest
    from llm.manifest import job as checks

    # The image of the spec's own (first listed) architecture, whatever this host's: Ascend clusters are aarch64.
    arch = load_spec(env).spec.arch[0]
    loaded = validate_run_request(env, model, phase, arch=arch)
    model = model or default_model(loaded)
    accelerator = loaded.spec.accelerator
    target = target or ("ascendjob" if accelerator == "npu" else "pytorchjob")
    checks.check_target(target, accelerator)
    launch = checks.launch_options(nodes, master_port, socket_ifname, launch_env)
    devices = checks.devices_per_node(target, accelerator, devices_per_node)
    gid = checks.device_gid(accelerator, device_gid)
    if workspace is not None and target == "slurm":
        container.check_workspace_path(Path(workspace))  # what `invoke run` on each node would refuse
    elif workspace is not None:
        checks.check_claim_name(workspace)
    job = Job(
        target=target,
        env=env,
        accelerator=accelerator,
        arch=arch,
        image=loaded.tag,
        model=model,
        phase=phase,
        launch=launch,
        extra_args=tuple(extra),
        devices_per_node=devices,
        workspace=workspace,
        device_gid=gid,
        shm_size=loaded.spec.shm_size,
    )
    return render_manifest(job)


def up(
    env: str,
    workspace: Path,
    *,
    image: str | None = None,
    devices: str | None = None,
    name: str | None = None,
    twin: str | None = None,
) -> str:
    loaded = resolve(env, twin)
    check_request(workspace, name)
    ensure_daemon()
    return container.up(run_options(loaded, workspace, image=image, devices=devices, name=name))


def down(env: str, name: str | None = None) -> bool:
    name = container.check_container_name(name or container.container_name(env))
    ensure_daemon()
    return container.down(name)


def shell(env: str, name: str | None = None) -> int:
    name = container.check_container_name(name or container.container_name(env))
    ensure_daemon()
    if not container.name_taken(name):
        hint = f"--env {env}" if name == container.container_name(env) else f"--env {env} --name {name}"
        raise NpuboxError(f"no container named {name}: start it with `invoke up {hint}`")
    argv = container.exec_argv(name, ["bash"], interactive=sys.stdin.isatty())
    return docker(argv, check=False).returncode


def ps() -> str:
    ensure_daemon()
    proc = docker(
        [
            "ps",
            "--all",
            "--filter",
            f"label={container.MANAGED_LABEL}=true",
            "--format",
            'table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Label "npubox.env"}}',
        ],
        capture=True,
    )
    return proc.stdout


def check(
    env: str, *, image: str | None = None, workspace: Path | None = None, extra: list[str] = (), twin: str | None = None
) -> int:
    """Run tests/infra (testinfra) against a fresh sealed container of the env (or its twin)."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("testinfra") is None:
        raise NpuboxError(
            "`invoke check` runs testinfra, which is not installed: install the test tools with "
            "`pip install -e '.[test]'` (scripts/setup.sh does) and retry"
        )
    loaded = resolve(env, twin)
    ensure_daemon()
    name = f"npubox-check-{loaded.name}-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="npubox-check-") as tmp:
        ws = Path(workspace) if workspace else Path(tmp) / "workspace"
        container.up(run_options(loaded, ws, image=image, name=name))
        try:
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                str(REPO_ROOT / "tests" / "infra"),
                f"--hosts=docker://{name}",
                f"--npubox-env={env}",
                *([f"--npubox-twin={twin}"] if twin else []),
                "-p",
                "no:cacheprovider",
                "-q",
                *extra,
            ]
            _stderr_echo(shlex.join(cmd))
            return subprocess.run(cmd, cwd=REPO_ROOT).returncode
        finally:
            container.down(name)


def export_image(
    env: str, output: Path, *, image: str | None = None, twin: str | None = None
) -> tuple[Path, Path, transfer.Manifest]:
    """`invoke export-image`: the env's image archive, its manifest file and content, for an air-gapped host."""
    loaded = resolve(env, twin)
    ensure_daemon()
    archive, manifest = transfer.export_image(loaded, output, image=image)
    return archive, transfer.manifest_path(archive), manifest


def import_image(archive: Path) -> transfer.Manifest:
    """`invoke import-image`: verify an exported archive against its manifest, then load it."""
    ensure_daemon()
    return transfer.import_image(archive)
