"""npubox tasks: `invoke --list`. Thin: parse options, call llm.env.commands, print.

Every task echoes the full docker command it runs (lines starting with `+`).
"""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from llm.env import commands
from llm.errors import NpuboxError

ENV_HELP = "environment spec name (envs/<name>.yaml); `invoke envs` lists them"
TWIN_HELP = "use the env's CPU twin (`cpu`): same sources and pins, torch CPU, no CANN, no torch_npu/apex"
WORKSPACE_HELP = "host folder mounted as /workspace, the only writable place (default ./workspace)"
SOCKET_HELP = "network interface for HCCL and gloo between nodes, e.g. eth0 (HCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME)"
LAUNCH_ENV_HELP = "KEY=VALUE for the workers, e.g. HCCL_CONNECT_TIMEOUT=1800 (repeatable)"


def friendly(fn):
    """Turn an NpuboxError into one sentence and exit code 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NpuboxError as e:
            raise Exit(f"error: {e}", code=1) from None

    return wrapper


def args_after_dashes(c) -> list[str]:
    """The arguments after ``--``, exactly as the shell passed them: invoke's ``c.remainder`` joins them with
    spaces, which loses their quoting (``-- --save 'my dir'``, ``-- --verify "it's"``)."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    try:
        return shlex.split(c.remainder) if c.remainder else []
    except ValueError as e:
        raise NpuboxError(f"the arguments after -- ({c.remainder!r}) cannot be split: {e}") from None


def _table(rows, headers):
    from llm.tables import print_table

    print_table(headers, rows)


@task
@friendly
def envs(c):
    """List the environment specs in envs/."""
    _table(commands.list_envs(), ["env", "accelerator", "version", "description"])


@task
@friendly
def models(c):
    """List the model recipes (llm/recipes/)."""
    _table(commands.list_models(), ["model", "family", "shape", "pretrain default"])


@task(
    help={
        "env": ENV_HELP,
        "bootstrap": "bootstrap with debootstrap even if the base could be pulled",
        "twin": TWIN_HELP,
    }
)
@friendly
def base_image(c, env="cpu", bootstrap=False, twin=None):
    """Make the spec's base image: use it if present, pull it, else bootstrap it from Debian packages."""
    print(commands.base_image(env, force_bootstrap=bootstrap, twin=twin))


@task(
    help={
        "env": ENV_HELP,
        "wheelhouse": "extra folder of local wheels (repeatable)",
        "arch": "x86_64, aarch64 or all (default: every architecture the spec lists)",
        "source-cache": "folder of git mirrors or archives of the pinned sources, whose requirements files "
        "go into the lock",
        "twin": "lock the env's twin (cpu) from the real lock's pins",
    },
    iterable=["wheelhouse"],
)
@friendly
def lock(c, env="cpu", wheelhouse=None, arch=None, source_cache=None, twin=None):
    """Resolve the spec's requirements (and its sources' requirements files) into its lock(s) with hashes (uv)."""
    for path in commands.lock(env, wheelhouse or [], arch=arch, source_cache=source_cache, twin=twin):
        print(f"wrote {path}")


@task(
    help={
        "env": ENV_HELP,
        "wheelhouse": "extra folder of local wheels, e.g. torch_npu/apex (repeatable)",
        "vendor": "folder with the CANN installers (.run) the spec names",
        "source-cache": "folder of git mirrors (<name>.git) or archives (<name>-<commit>.tar.gz) of pinned sources",
        "dry-run": "print the plan (stages, inputs, what is missing, labels) and build nothing",
        "twin": TWIN_HELP,
        "arch": "plan for this architecture (x86_64, aarch64; with --dry-run)",
        "allow-unverified-sources": "build a source archive that shows no commit id and no SHA256SUMS line "
        "(the image's npubox.sources.unverified label names it)",
    },
    iterable=["wheelhouse"],
)
@friendly
def build_image(
    c,
    env="cpu",
    wheelhouse=None,
    vendor=None,
    source_cache=None,
    dry_run=False,
    twin=None,
    arch=None,
    allow_unverified_sources=False,
):
    """Build the versioned image npubox/<env>:<version>-<spec hash> from the spec and its lock."""
    result = commands.build(
        env,
        wheelhouse or [],
        vendor=vendor,
        source_cache=source_cache,
        dry_run=dry_run,
        twin=twin,
        arch=arch,
        allow_unverified_sources=allow_unverified_sources,
    )
    if dry_run:
        from llm.env.plan import print_plan

        print_plan(result)
    else:
        print(result)


@task(
    help={
        "env": ENV_HELP,
        "model": "model recipe (`invoke models`; default: the env's tiny test model)",
        "phase": f"one of {', '.join(commands.PHASES)}",
        "workspace": WORKSPACE_HELP,
        "image": "run this image instead of the spec's tag",
        "devices": "accelerator subset, e.g. 0-3,6",
        "nnodes": "nodes in a multi-node run (> 1: the container uses the host network)",
        "node-rank": "this node's rank, 0..nnodes-1",
        "master-addr": "address of node 0",
        "master-port": "port on node 0",
        "nproc": "processes on this node (default: one per device; CPU: 1)",
        "socket-ifname": SOCKET_HELP,
        "launch-env": LAUNCH_ENV_HELP,
        "name": "container name (default: a generated one)",
        "twin": TWIN_HELP,
    },
    iterable=["launch_env"],
)
@friendly
def run(
    c,
    env="cpu",
    model=None,
    phase="env",
    workspace=None,
    image=None,
    devices=None,
    nnodes=1,
    node_rank=0,
    master_addr="127.0.0.1",
    master_port=6000,
    nproc=None,
    socket_ifname=None,
    launch_env=None,
    name=None,
    twin=None,
):
    """Run `python -m llm <phase> --model <model>` in a sealed one-off container. Extra phase args go after `--`.

    With --nnodes/--nproc the phase runs under `python -m llm launch` (torchrun)."""
    extra = args_after_dashes(c)
    launch = None
    if int(nnodes) > 1 or nproc or socket_ifname or launch_env:
        launch = commands.Launch(
            int(nnodes),
            int(node_rank),
            master_addr,
            int(master_port),
            int(nproc) if nproc else None,
            socket_ifname,
            tuple(launch_env or ()),
        )
    code = commands.run_phase(
        env,
        model,
        phase,
        extra,
        Path(workspace) if workspace else commands.DEFAULT_WORKSPACE,
        image=image,
        devices=devices,
        launch=launch,
        name=name,
        twin=twin,
    )
    if code:
        raise Exit(f"error: phase {phase} exited with {code}", code=code)


@task(
    help={
        "target": "ascendjob (MindCluster, npu envs), pytorchjob (Kubeflow) or slurm (sbatch script); "
        "default: ascendjob for npu envs, pytorchjob for the others",
        "nodes": "number of nodes (default 2)",
        "env": ENV_HELP,
        "model": "model recipe (default: the env's tiny test model)",
        "phase": "phase to run",
        "devices-per-node": "accelerators each Kubernetes pod requests (default 8; none for cpu; Slurm: the node's)",
        "workspace": "PersistentVolumeClaim name (Kubernetes, default npubox-workspace) or shared folder (Slurm, "
        "default: invoke run's, ./workspace where sbatch runs)",
        "master-port": "port on node 0 (default 6000)",
        "socket-ifname": SOCKET_HELP,
        "launch-env": LAUNCH_ENV_HELP,
        "device-gid": "npu: the group owning /dev/davinci* on the nodes (default 1000, HwHiAiUser)",
        "output": "write to this file instead of printing",
    },
    iterable=["launch_env"],
)
@friendly
def manifest(
    c,
    target=None,
    nodes="2",
    env="cpu",
    model=None,
    phase="pretrain",
    devices_per_node=None,
    workspace=None,
    master_port=None,
    socket_ifname=None,
    launch_env=None,
    device_gid=None,
    output=None,
):
    """Render a MindCluster AscendJob, a Kubeflow PyTorchJob or an sbatch script for the same sealed run."""
    extra = args_after_dashes(c)
    text = commands.manifest(
        env,
        target,
        nodes,
        model,
        phase,
        devices_per_node,
        extra,
        workspace,
        master_port=master_port,
        socket_ifname=socket_ifname,
        launch_env=launch_env or [],
        device_gid=device_gid,
    )
    if output:
        from llm.atomic import write_text_atomic

        write_text_atomic(output, text)
        print(f"wrote {output}")
    else:
        print(text, end="")


@task(
    help={
        "env": ENV_HELP,
        "workspace": WORKSPACE_HELP,
        "image": "run this image instead of the spec's tag",
        "devices": "accelerator subset, e.g. 0-3,6",
        "name": "container name (default npubox-<env>)",
        "twin": TWIN_HELP,
    }
)
@friendly
def up(c, env="cpu", workspace=None, image=None, devices=None, name=None, twin=None):
    """Start a long-lived sealed container to `docker exec -it` into."""
    name = commands.up(
        env,
        Path(workspace) if workspace else commands.DEFAULT_WORKSPACE,
        image=image,
        devices=devices,
        name=name,
        twin=twin,
    )
    again = f"--env {env}" if name == commands.container.container_name(env) else f"--name {name}"
    print(f"{name} is up: `docker exec -it {name} bash` or `invoke shell {again}`")


@task(help={"env": ENV_HELP, "name": "container name (default npubox-<env>)"})
@friendly
def down(c, env="cpu", name=None):
    """Stop and remove the env's long-lived container."""
    if not commands.down(env, name):
        print("no such container", file=sys.stderr)


@task(help={"env": ENV_HELP, "name": "container name (default npubox-<env>)"})
@friendly
def shell(c, env="cpu", name=None):
    """Open bash inside the env's long-lived container (`invoke up` first)."""
    code = commands.shell(env, name)
    if code:
        raise Exit(code=code)


@task
@friendly
def ps(c):
    """List npubox containers."""
    print(commands.ps(), end="")


@task(help={"env": ENV_HELP, "image": "check this image instead of the spec's tag", "twin": TWIN_HELP})
@friendly
def check(c, env="cpu", image=None, twin=None):
    """testinfra: check that a fresh container of the image is exactly what the spec says (tests/infra)."""
    extra = args_after_dashes(c)
    code = commands.check(env, image=image, extra=extra, twin=twin)
    if code:
        raise Exit(f"error: env {env} image does not match its spec (see the failures above)", code=code)


@task(
    help={
        "env": ENV_HELP,
        "output": "folder for the archive and its manifest (default: the current folder)",
        "image": "export this image instead of the spec's tag",
        "twin": TWIN_HELP,
    }
)
@friendly
def export_image(c, env="cpu", output=".", image=None, twin=None):
    """Save the env's image as <env>-<version>-<hash12>.tar plus a manifest (sha256), for air-gapped hosts."""
    archive, manifest_file, manifest = commands.export_image(env, Path(output), image=image, twin=twin)
    print(f"wrote {archive} ({manifest.size} bytes, sha256 {manifest.sha256})")
    print(f"wrote {manifest_file}")
    print(f"on the other host: `invoke import-image --archive {archive.name}` (with the manifest beside it)")


@task(help={"archive": "the .tar written by export-image; its .manifest.json must lie beside it"})
@friendly
def import_image(c, archive):
    """Verify an exported image archive (size, sha256) against its manifest, then docker load it."""
    manifest = commands.import_image(Path(archive))
    print(f"loaded {manifest.tag} (image id {manifest.image_id}), verified against its manifest")


ns = Collection(
    "npubox",
    envs,
    models,
    base_image,
    lock,
    build_image,
    run,
    manifest,
    up,
    down,
    shell,
    ps,
    check,
    export_image,
    import_image,
)
