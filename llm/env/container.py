"""Sealed containers: the flags every npubox container runs with, and up / down / exec / run.

Sealed means: no network (single node) or the host network (multi-node, nothing else changes),
a read-only root filesystem with a tmpfs /tmp, the workspace volume as the only writable mount,
a non-root user, no new privileges, no capabilities, Hugging Face offline.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from llm.env.engine import Echo, _stderr_echo, docker, image_exists
from llm.env.foreground import run_stoppable
from llm.env.spec import LoadedSpec
from llm.errors import NpuboxError
from llm.workspace import DEFAULT_ROOT, SUBDIRS

IMAGE_UID = 1000  # the image's `npubox` user (containers/Dockerfile)
WORKSPACE_MOUNT = DEFAULT_ROOT  # where the phases inside look for the workspace
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


# Never a workspace: the filesystem root and the system's own folders, nor anything inside the
# folders that hold the system itself. Everything below /home, /tmp, /var, /srv, /opt, /mnt ...
# (a project folder) may be one, and so may a folder inside the invoker's home.
SYSTEM_FOLDERS = frozenset(
    {
        "/",
        "/home",
        "/root",
        "/tmp",
        "/var",
        "/var/tmp",
        "/var/lib",
        "/var/log",
        "/var/cache",
        "/var/spool",
        "/srv",
        "/opt",
        "/mnt",
        "/media",
        "/snap",
        "/nix",
    }
)
SYSTEM_TREES = (
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
)
# The engine reads `--mount` as comma-separated key=value fields (CSV): these would start a new field.
MOUNT_UNSAFE = re.compile(r'[,="\x00-\x1f\x7f]')


def check_workspace_path(path: Path) -> Path:
    """The absolute workspace path, refused with one sentence before any filesystem call when it is the
    filesystem root, a system folder, the invoker's home, or holds characters that would change the mount."""
    absolute = Path(os.path.normpath(os.path.abspath(os.path.expanduser(str(path)))))
    _refuse_system_folder(absolute, path)
    return absolute


def _refuse_system_folder(absolute: Path, given: Path) -> None:
    text = str(absolute)
    bad = MOUNT_UNSAFE.search(text)
    if bad:
        raise NpuboxError(
            f"--workspace {str(given)!r}: contains {bad.group()!r}, which the Docker engine would read as part of the "
            "--mount option list; choose a folder whose path has no ',', '=', '\"' or control characters"
        )
    home = os.path.normpath(os.path.expanduser("~"))
    in_tree = any(text == t or text.startswith(t + "/") for t in SYSTEM_TREES)
    if text in SYSTEM_FOLDERS or in_tree or text == home:
        what = "the filesystem root" if text == "/" else ("your home folder" if text == home else "a system folder")
        raise NpuboxError(
            f"--workspace {given}: {text} is {what}; npubox mounts the workspace writable into the container and "
            "never takes over a system folder: choose a project folder such as ./workspace"
        )


def prepare_workspace(path: Path, uid: int | None = None) -> Path:
    """Check the workspace folder and create what is missing of it; return its resolved path.

    npubox changes the owner of nothing it did not create. The container runs as the folder's owner
    (see ``workspace_user``). When root invokes it and npubox creates the folder, the folder and its
    skeleton are handed to the image's user, each one as it is made (through a descriptor of the new
    directory: no path walk, no link followed). An existing folder that root owns is refused."""
    uid = os.getuid() if uid is None else uid
    absolute = check_workspace_path(path)
    resolved = absolute.resolve()  # a link to a system folder is that folder
    _refuse_system_folder(resolved, path)
    created: list[tuple[Path, int]] = []  # (directory, descriptor of it) for each directory made here
    try:
        if not resolved.exists():
            resolved.parent.mkdir(parents=True, exist_ok=True)
            created.append(_make_dir(resolved.parent, resolved.name))
        owner = resolved.stat()
        if uid == 0 and owner.st_uid == 0 and not created:
            raise NpuboxError(
                f"--workspace {path}: {resolved} belongs to root, and the container never runs as root; give it to "
                f"the user who should own the files (`chown USER {resolved}`, or `chown {IMAGE_UID}:{IMAGE_UID}` for "
                "the image's npubox user) or name a folder that does not exist yet, which npubox creates for that user"
            )
        for sub in SUBDIRS:
            if (resolved / sub).is_symlink():
                raise NpuboxError(
                    f"--workspace {path}: {resolved / sub} is a symbolic link (to {os.readlink(resolved / sub)}); "
                    f"the container mounts the workspace folder alone, where that link leads nowhere: make {sub} a "
                    "folder inside the workspace (move what it points to there)"
                )
            if not (resolved / sub).exists():
                created.append(_make_dir(resolved, sub))
        if uid == 0:  # root made them: they go to whoever the container runs as
            made_workspace = bool(created) and created[0][0] == resolved
            new_owner = (IMAGE_UID, IMAGE_UID) if made_workspace else (owner.st_uid, owner.st_gid)
            for _, fd in created:
                os.fchown(fd, *new_owner)
    except OSError as e:
        raise NpuboxError(
            f"cannot create the workspace folder {resolved} ({e.strerror}); choose another with --workspace"
        ) from None
    finally:
        for _, fd in created:
            os.close(fd)
    return resolved


def _make_dir(parent: Path, name: str) -> tuple[Path, int]:
    """mkdir ``parent/name`` and return it with a descriptor of the directory just made (O_NOFOLLOW: a link
    put in its place in between is refused, and a directory cannot be a hard link to anything else)."""
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir(name, dir_fd=parent_fd)
        return parent / name, os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)


def sealed_flags(opts: RunOptions) -> list[str]:
    _refuse_system_folder(opts.workspace, opts.workspace)  # also for callers that did not prepare it
    uid, gid = opts.user or workspace_user(opts.workspace)
    flags = [
        "--network",
        opts.network,
        "--read-only",
        "--tmpfs",
        "/tmp:rw,exec,nosuid,nodev,size=4g",
        "--mount",
        f"type=bind,source={opts.workspace},target={WORKSPACE_MOUNT}",
        "--workdir",
        WORKSPACE_MOUNT,
        "--user",
        f"{uid}:{gid}",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
        "--shm-size",
        opts.shm_size,
        "--label",
        f"{MANAGED_LABEL}=true",
        "--label",
        f"npubox.env={opts.env_name}",
    ]
    if opts.network == "none":
        # No network, so the host name resolves to loopback; MindFormers' trainers look their own up at start-up
        # (socket.gethostbyname(socket.gethostname()), mindformers/trainer/base_trainer.py @ r1.8.0).
        flags += ["--hostname", "localhost"]
    if opts.name:
        flags += ["--name", opts.name]
    flags += list(opts.device_flags)
    for key, value in sorted(opts.environment.items()):
        flags += ["--env", f"{key}={value}"]
    return flags


def require_image(loaded: LoadedSpec, image: str | None = None) -> str:
    """The spec's tag when built; or ``image``, when present and able to run ``python -m llm``."""
    if image is None:
        if not image_exists(loaded.tag):
            raise NpuboxError(
                f"the image {loaded.tag} for env {loaded.name!r} is not built (or the spec changed since): "
                f"run `invoke build-image {loaded.env_args}`"
            )
        return loaded.tag
    if not image_exists(image):
        raise NpuboxError(
            f"--image {image} is not present in the local Docker engine: pull it (`docker pull {image}`) or load it "
            "(`docker load -i FILE.tar`, or `invoke import-image --archive FILE.tar` for one written by export-image)"
        )
    probe = docker(
        [
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--user",
            f"{IMAGE_UID}:{IMAGE_UID}",
            "--entrypoint",
            "python",
            image,
            "-c",
            "import llm",
        ],
        check=False,
        capture=True,
    )
    if probe.returncode != 0:
        lines = [ln for ln in probe.stderr.splitlines() if ln.strip() and not ln.startswith("Run 'docker run --help'")]
        why = lines[-1].split("exec: ")[-1].removesuffix(": unknown") if lines else f"exit {probe.returncode}"
        raise NpuboxError(
            f"--image {image} cannot run npubox phases: `python -c 'import llm'` fails in it ({why}); "
            "use an image made by `invoke build-image` (or `invoke import-image`)"
        )
    return image


# Docker's own rule for container names (moby daemon/names/names.go, RestrictedNameChars).
CONTAINER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def container_name(env_name: str) -> str:
    return f"npubox-{env_name}"


def check_container_name(name: str) -> str:
    if not CONTAINER_NAME_RE.match(name):
        raise NpuboxError(
            f"--name {name!r} is not a container name: use letters, digits, '_', '.' and '-', starting with a "
            "letter or digit (Docker's rule)"
        )
    return name


def name_taken(name: str) -> bool:
    proc = docker(["ps", "--all", "--filter", f"name=^{name}$", "--format", "{{.Names}}"], echo=None, capture=True)
    return name in proc.stdout.split()


def run(opts: RunOptions, command: list[str], *, interactive: bool = False, echo: Echo | None = _stderr_echo) -> int:
    """`docker run --rm` a one-off sealed container; returns the command's exit code."""
    if opts.name and name_taken(check_container_name(opts.name)):
        raise NpuboxError(
            f"--name {opts.name}: a container of that name already exists; remove it (`invoke down --name "
            f"{opts.name}`, or `docker rm -f {opts.name}`) or choose another --name"
        )
    if interactive:  # the terminal is the container's: its Ctrl-C goes in through the TTY
        args = ["run", "--rm", "--init", "-it", *sealed_flags(opts), opts.image, *command]
        return docker(args, echo=echo, check=False).returncode
    return run_stoppable(["--rm", "--init", *sealed_flags(opts), opts.image, *command], echo)


def up(opts: RunOptions, echo: Echo | None = _stderr_echo) -> str:
    """Start a long-lived named sealed container that users can `docker exec -it` into."""
    name = check_container_name(opts.name or container_name(opts.env_name))
    if name_taken(name):
        raise NpuboxError(
            f"a container named {name} already exists: use it (`invoke shell --name {name}`) or remove it "
            f"(`invoke down --name {name}`)"
        )
    named = dataclasses.replace(opts, name=name)
    docker(
        ["run", "--detach", "--init", *sealed_flags(named), opts.image, "sleep", "infinity"],
        echo=echo,
        what=f"starting container {name}",
    )
    return name


def down(name: str, echo: Echo | None = _stderr_echo) -> bool:
    """Stop and remove the container ``name`` if npubox started it (it carries MANAGED_LABEL); False if there is
    none. Another's container of that name is refused, never removed: the name alone proves nothing."""
    fmt = f'{{{{.Id}}}} {{{{index .Config.Labels "{MANAGED_LABEL}"}}}}'
    proc = docker(
        ["inspect", "--type", "container", "--format", fmt, name],
        echo=None,
        check=False,
        capture=True,
    )
    if proc.returncode != 0:
        return False
    container_id, _, managed = proc.stdout.strip().partition(" ")
    if managed != "true":
        raise NpuboxError(
            f"the container {name} was not started by npubox (it has no {MANAGED_LABEL}=true label): it was left "
            f"alone; if it is yours to remove, `docker rm -f {name}`"
        )
    proc = docker(["rm", "--force", container_id], echo=echo, check=False, capture=True)  # the id inspected, not a name
    return proc.returncode == 0


def exec_argv(name: str, command: list[str], interactive: bool = True) -> list[str]:
    return ["exec", *(["-it"] if interactive else []), name, *command]
