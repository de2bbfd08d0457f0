"""The workspace mount and the containers around it: no chown of what npubox did not create, no system
folder as a workspace, no mount option smuggled in through a path, and Docker's own errors (a bad or
taken name, an absent image, an image without python) turned into one sentence before anything runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from llm.env import commands, container
from llm.env.container import IMAGE_UID, RunOptions, prepare_workspace, sealed_flags
from llm.env.spec import load_spec
from llm.errors import NpuboxError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="owner changes need root")


def attempt(call, *forbidden: str):
    """Run ``call`` with the named filesystem calls (``os.mkdir``, ``Path.stat``, ...) made to fail; return the
    NpuboxError it raised, or the forbidden call it made (restored before the test goes on)."""
    made = []

    def fail(*args, **kwargs):
        made.append(args)
        raise AssertionError("forbidden filesystem call")

    with pytest.MonkeyPatch.context() as mp:
        for name in forbidden:
            module, _, attr = name.rpartition(".")
            mp.setattr({"os": os, "Path": Path}[module], attr, fail)
        try:
            call()
        except NpuboxError as e:
            return e
        except AssertionError:
            pass
    assert not made, f"a forbidden filesystem call was made: {made[0]}"
    raise AssertionError("no NpuboxError was raised")


@pytest.fixture
def no_docker(monkeypatch):
    """Docker must not be asked anything: every way to reach it fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError(f"Docker was called: {args}")

    monkeypatch.setattr(commands, "ensure_daemon", fail)
    monkeypatch.setattr(commands, "docker", fail)
    monkeypatch.setattr(container, "docker", fail)
    monkeypatch.setattr(container, "image_exists", fail)
    monkeypatch.setattr(subprocess, "run", fail)


# --- case 1: chown ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder",
    [
        "/",
        "/etc",
        "/root",
        "/usr",
        "/var",
        "/tmp",
        "/home",
        "/boot",
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/srv",
        "/opt",
        "/etc/ssl",
        "/usr/lib",
        "/var/lib/docker",
        "/tmp/../etc",
        "~",
    ],
)
def test_system_folders_are_refused_before_any_filesystem_call(folder):
    error = attempt(
        lambda: prepare_workspace(Path(folder)),
        "os.mkdir",
        "os.makedirs",
        "os.chown",
        "os.lchown",
        "os.fchown",
        "os.open",
        "os.walk",
        "Path.mkdir",
        "Path.stat",
        "Path.exists",
    )
    message = str(error)
    assert message.startswith(f"--workspace {folder}: ")
    assert any(w in message for w in ("is the filesystem root", "is a system folder", "is your home folder"))
    assert "choose a project folder" in message


def test_a_link_to_a_system_folder_is_refused(tmp_path):
    link = tmp_path / "ws"
    link.symlink_to("/etc")
    error = attempt(lambda: prepare_workspace(link), "os.mkdir", "os.chown", "os.lchown", "os.fchown", "Path.mkdir")
    assert "/etc is a system folder" in str(error)


@root_only
def test_a_root_owned_workspace_is_refused_and_nothing_changes_owner(tmp_path):
    outside = tmp_path / "outside-secret"
    outside.write_text("root's")
    ws = tmp_path / "ws"
    (ws / "models").mkdir(parents=True)
    os.link(outside, ws / "models" / "hardlink")  # a hard link inside must never hand the outside file over
    (ws / "models" / "weights.bin").write_text("x")
    for p in (ws, ws / "models", outside):
        os.chown(p, 0, 0)
    with pytest.raises(NpuboxError) as info:
        prepare_workspace(ws)
    message = str(info.value)
    assert f"{ws} belongs to root" in message and "the container never runs as root" in message
    assert f"chown {IMAGE_UID}:{IMAGE_UID}" in message
    for p in (ws, ws / "models", ws / "models" / "weights.bin", outside):
        assert p.stat().st_uid == 0, p
    assert not (ws / "data").exists()  # refused before anything was made


@root_only
def test_only_what_npubox_creates_changes_owner(tmp_path):
    # A folder someone else owns: what is in it keeps its owner; the skeleton npubox adds is theirs.
    ws = tmp_path / "theirs"
    (ws / "models").mkdir(parents=True)
    (ws / "notes.txt").write_text("x")
    os.chown(ws, 1234, 2345)
    assert prepare_workspace(ws) == ws  # as root
    assert (ws / "models").stat().st_uid == 0 and (ws / "notes.txt").stat().st_uid == 0
    for sub in ("data", "checkpoints", "eval", "logs"):
        st = (ws / sub).stat()
        assert (st.st_uid, st.st_gid) == (1234, 2345), sub
    # A folder npubox creates for root: it and its skeleton go to the image's user, the parents stay root's.
    fresh = tmp_path / "new" / "ws"
    prepare_workspace(fresh)
    assert (tmp_path / "new").stat().st_uid == 0
    for sub in ("", "models", "data", "checkpoints", "eval", "logs"):
        assert (fresh / sub).stat().st_uid == IMAGE_UID, sub


def test_a_non_root_invoker_changes_no_owner(tmp_path, monkeypatch):
    for name in ("chown", "lchown", "fchown"):
        monkeypatch.setattr(os, name, lambda *a, name=name: pytest.fail(f"{name} called"))
    ws = prepare_workspace(tmp_path / "mine", uid=1500)
    assert sorted(p.name for p in ws.iterdir()) == ["checkpoints", "data", "eval", "logs", "models"]


# --- case 2: mount-option injection ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/tmp/x,source=/etc", "/tmp/x,readonly=false", "/tmp/a=b", '/tmp/q"x', "/tmp/n\nl"])
def test_a_path_that_would_add_mount_options_never_reaches_docker(path, no_docker):
    with pytest.raises(NpuboxError) as info:
        commands.run_phase("cpu", "tiny", "env", [], Path(path))
    assert "would read as part of the --mount option list" in str(info.value)
    with pytest.raises(NpuboxError, match="--mount option list"):
        commands.up("cpu", Path(path))
    with pytest.raises(NpuboxError, match="--mount option list"):
        sealed_flags(RunOptions(image="img", workspace=Path(path), env_name="cpu", user=(1, 1)))


# --- container names, images ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x;id", "-rm", "a b", "$(id)", "_x", ""])
def test_a_bad_container_name_is_refused_before_docker(name, tmp_path, no_docker):
    for call in (
        lambda: commands.run_phase("cpu", "tiny", "env", [], tmp_path / "ws", name=name),
        lambda: commands.up("cpu", tmp_path / "ws", name=name),
    ):
        with pytest.raises(NpuboxError) as info:
            call()
        assert f"--name {name!r} is not a container name" in str(info.value)


class FakeDocker:
    """Answers `docker ps` with the containers that exist and records every other call."""

    def __init__(self, existing=(), probe_rc=0, probe_err=""):
        self.existing, self.probe_rc, self.probe_err = list(existing), probe_rc, probe_err
        self.calls: list[list[str]] = []

    def __call__(self, args, **kwargs):
        self.calls.append(list(args))
        if args[0] == "ps":
            return subprocess.CompletedProcess(args, 0, "\n".join(self.existing) + "\n", "")
        if "--entrypoint" in args:
            return subprocess.CompletedProcess(args, self.probe_rc, "", self.probe_err)
        return subprocess.CompletedProcess(args, 125, "", "docker: Error response from daemon: Conflict.")


def test_a_taken_name_is_named_with_how_to_remove_it(tmp_path, monkeypatch):
    fake = FakeDocker(existing=["mybox"])
    monkeypatch.setattr(container, "docker", fake)
    opts = RunOptions(image="img", workspace=tmp_path, env_name="cpu", user=(1, 1), name="mybox")
    with pytest.raises(NpuboxError) as info:
        container.run(opts, ["python", "-m", "llm", "env"])
    assert str(info.value) == (
        "--name mybox: a container of that name already exists; remove it "
        "(`invoke down --name mybox`, or `docker rm -f mybox`) or choose another --name"
    )
    assert not [c for c in fake.calls if c[0] == "run"]  # the phase never started
    with pytest.raises(NpuboxError) as info:
        container.up(opts)
    assert "use it (`invoke shell --name mybox`) or remove it (`invoke down --name mybox`)" in str(info.value)


def test_up_with_a_name_suggests_the_shell_of_that_name(monkeypatch, capsys):
    from invoke import Context

    import tasks

    monkeypatch.setattr(tasks.commands, "up", lambda env, workspace, **kw: kw["name"] or f"npubox-{env}")
    tasks.up(Context(), env="cpu", name="mybox")
    assert "`invoke shell --name mybox`" in capsys.readouterr().out
    tasks.up(Context(), env="cpu")
    assert "`invoke shell --env cpu`" in capsys.readouterr().out


def test_an_absent_image_says_how_to_pull_or_load_it(monkeypatch):
    monkeypatch.setattr(container, "image_exists", lambda ref: False)
    with pytest.raises(NpuboxError) as info:
        container.require_image(load_spec("cpu"), "busybox")
    message = str(info.value)
    assert message.startswith("--image busybox is not present in the local Docker engine")
    assert "`docker pull busybox`" in message and "docker load -i" in message
    assert "build-image" not in message


def test_an_image_without_python_is_refused_before_the_phase_runs(monkeypatch):
    monkeypatch.setattr(container, "image_exists", lambda ref: True)
    fake = FakeDocker(
        probe_rc=127,
        probe_err=(  # what the engine says for busybox
            "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: runc create "
            'failed: unable to start container process: exec: "python": executable file not found in $PATH: unknown\n\n'
            "Run 'docker run --help' for more information\n"
        ),
    )
    monkeypatch.setattr(container, "docker", fake)
    with pytest.raises(NpuboxError) as info:
        container.require_image(load_spec("cpu"), "busybox")
    assert str(info.value).startswith(
        "--image busybox cannot run npubox phases: `python -c 'import llm'` fails in it "
        '("python": executable file not found in $PATH)'
    )
    [probe] = fake.calls  # one sealed probe, nothing else
    assert probe[:2] == ["run", "--rm"] and "--network" in probe and "none" in probe and "--cap-drop" in probe
    assert probe[probe.index("--user") + 1] == f"{IMAGE_UID}:{IMAGE_UID}"


@pytest.mark.parametrize("target", ["elsewhere", "missing"])
def test_a_workspace_subfolder_that_is_a_link_is_refused_naming_it(tmp_path, target):
    """Rough edge of issue 19: the container sees the workspace alone, where a link out leads nowhere."""
    ws = tmp_path / "ws"
    ws.mkdir()
    if os.getuid() == 0:
        os.chown(ws, IMAGE_UID, IMAGE_UID)  # a user's workspace (a root-owned one is refused before this check)
    outside = tmp_path / "elsewhere"
    if target == "elsewhere":
        outside.mkdir()
    (ws / "models").symlink_to(outside)
    with pytest.raises(NpuboxError) as e:
        prepare_workspace(ws)
    assert f"{ws}/models is a symbolic link (to {outside})" in str(e.value)
    assert (ws / "models").is_symlink()  # left as it was
