"""Sealed containers: the flags every npubox container runs with, and up / down / exec / run.

Sealed means: no network (single node) or the host network (multi-node, nothing else changes),
a read-only root filesystem with a tmpfs /tmp, the workspace volume as the only writable mount,
a non-root user, no new privileges, no capabilities, Hugging Face offline.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from llm.env.engine import Echo, _stderr_echo, docker, image_exists
from llm.env.spec import LoadedSpec
from llm.errors import NpuboxError

IMAGE_UID = 1000  # the image's `npubox` user (containers/Dockerfile)
WORKSPACE_MOUNT = "/workspace"
MANAGED_LABEL = "npubox.managed"


@dataclass(frozen=True)
class RunOptions:
    image: str
    workspace: Path
    env_name: str
    shm_size: str = "1g"
    network: str = "none"  # "none" for single-node phases, "host" for multi-node
    user: tuple[int, int] | None = None
    device_flags: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    name: str | None = None


def workspace_user(workspace: Path, uid: int | None = None, gid: int | None = None) -> tuple[int, int]:
    """Whom the container runs as, so that files it writes belong to the invoking host user.

    A non-root invoker runs as itself. Root never runs as root inside: it runs as the owner of
    the workspace folder when that is not root, else as the image's npubox user."""
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    if uid != 0:
        return uid, gid
    st = workspace.stat()
    if st.st_uid != 0:
        return st.st_uid, st.st_gid
    return IMAGE_UID, IMAGE_UID


def prepare_workspace(path: Path) -> Path:
    path = path.expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        for sub in ("models", "data", "checkpoints", "eval", "logs"):
            (path / sub).mkdir(exist_ok=True)
    except OSError as e:
        raise NpuboxError(f"cannot create the workspace folder {path} ({e.strerror}); choose another with --workspace") from None
    if os.getuid() == 0 and path.stat().st_uid == 0:
        # Root invoked us and owns the folder: hand it to the image's non-root user, who will write there.
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
                os.chown(name, IMAGE_UID, IMAGE_UID, follow_symlinks=False)
    return path


def sealed_flags(opts: RunOptions) -> list[str]:
    uid, gid = opts.user or workspace_user(opts.workspace)
    flags = [
        "--network", opts.network,
        "--read-only",
        "--tmpfs", "/tmp:rw,exec,nosuid,nodev,size=4g",
        "--mount", f"type=bind,source={opts.workspace},target={WORKSPACE_MOUNT}",
        "--workdir", WORKSPACE_MOUNT,
        "--user", f"{uid}:{gid}",
        "--security-opt", "no-new-privileges",
        "--cap-drop", "ALL",
        "--shm-size", opts.shm_size,
        "--label", f"{MANAGED_LABEL}=true",
        "--label", f"npubox.env={opts.env_name}",
    ]  # fmt: skip
    if opts.name:
        flags += ["--name", opts.name]
    flags += list(opts.device_flags)
    for key, value in sorted(opts.environment.items()):
        flags += ["--env", f"{key}={value}"]
    return flags


def require_image(loaded: LoadedSpec, image: str | None = None) -> str:
    tag = image or loaded.tag
    if not image_exists(tag):
        raise NpuboxError(
            f"the image {tag} for env {loaded.name!r} is not built (or the spec changed since): "
            f"run `invoke build-image --env {loaded.name}`"
        )
    return tag


def container_name(env_name: str) -> str:
    return f"npubox-{env_name}"


def run(opts: RunOptions, command: list[str], *, interactive: bool = False, echo: Echo | None = _stderr_echo) -> int:
    """`docker run --rm` a one-off sealed container; returns the command's exit code."""
    args = ["run", "--rm", "--init", *(["-it"] if interactive else []), *sealed_flags(opts), opts.image, *command]
    return docker(args, echo=echo, check=False).returncode


def up(opts: RunOptions, echo: Echo | None = _stderr_echo) -> str:
    """Start a long-lived named sealed container that users can `docker exec -it` into."""
    name = opts.name or container_name(opts.env_name)
    existing = docker(["ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Names}}"], echo=None, capture=True)
    if existing.stdout.strip():
        raise NpuboxError(f"a container named {name} already exists: use it (`invoke shell`) or remove it (`invoke down`)")
    named = dataclasses.replace(opts, name=name)
    docker(["run", "--detach", "--init", *sealed_flags(named), opts.image, "sleep", "infinity"], echo=echo,
           what=f"starting container {name}")  # fmt: skip
    return name


def down(name: str, echo: Echo | None = _stderr_echo) -> bool:
    proc = docker(["rm", "--force", name], echo=echo, check=False, capture=True)
    return proc.returncode == 0


def exec_argv(name: str, command: list[str], interactive: bool = True) -> list[str]:
    return ["exec", *(["-it"] if interactive else []), name, *command]
