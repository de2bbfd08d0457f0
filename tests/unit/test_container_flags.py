"""Sealed-container flags and the run request checks, without Docker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm.env.commands import PHASES, validate_run_request
from llm.env.container import IMAGE_UID, RunOptions, prepare_workspace, sealed_flags, workspace_user
from llm.errors import NpuboxError

WRITABLE_MOUNT_FLAGS = ("--mount", "--volume", "-v", "--volumes-from")


def values(flags: list[str], name: str) -> list[str]:
    """Every value given to `name`, whether written `--name value` or `--name=value`."""
    out = []
    for i, flag in enumerate(flags):
        if flag == name:
            out.append(flags[i + 1])
        elif flag.startswith(name + "="):
            out.append(flag.split("=", 1)[1])
    return out


def options(workspace: Path, **kw) -> RunOptions:
    return RunOptions(
        image="npubox/cpu:1.0.0-0123456789ab", workspace=workspace, env_name="cpu", user=(1234, 1234), **kw
    )


def test_sealed_flags(tmp_path):
    flags = sealed_flags(options(tmp_path))
    assert values(flags, "--network") == ["none"]
    assert "--read-only" in flags
    tmpfs = values(flags, "--tmpfs")
    assert len(tmpfs) == 1 and tmpfs[0].split(":")[0] == "/tmp"
    mounts = [v for name in WRITABLE_MOUNT_FLAGS for v in values(flags, name)]
    assert mounts == [f"type=bind,source={tmp_path},target=/workspace"]  # exactly one mount: the workspace
    assert values(flags, "--workdir") == ["/workspace"]
    assert values(flags, "--cap-drop") == ["ALL"]
    assert values(flags, "--cap-add") == []
    assert "no-new-privileges" in values(flags, "--security-opt")
    assert not any(f.startswith("--privileged") for f in flags)
    assert values(flags, "--user") == ["1234:1234"]
    assert values(flags, "--shm-size") == ["1g"]
    assert "npubox.managed=true" in values(flags, "--label")


def test_host_network_changes_only_the_network_and_the_host_name(tmp_path):
    sealed = sealed_flags(options(tmp_path))
    host = sealed_flags(options(tmp_path, network="host"))
    assert values(host, "--network") == ["host"]
    # without a network the container's host name is loopback's (it must resolve: MindFormers looks it up)
    assert values(sealed, "--hostname") == ["localhost"] and "--hostname" not in host
    h = sealed.index("--hostname")
    sealed = sealed[:h] + sealed[h + 2 :]
    i = sealed.index("--network")
    assert host[: i + 1] + host[i + 2 :] == sealed[: i + 1] + sealed[i + 2 :]


def test_device_flags_and_environment_are_appended(tmp_path):
    flags = sealed_flags(
        options(
            tmp_path,
            device_flags=("--device", "/dev/davinci0"),
            environment={"ASCEND_RT_VISIBLE_DEVICES": "0"},
            name="npubox-cpu",
        )
    )
    assert values(flags, "--device") == ["/dev/davinci0"]
    assert values(flags, "--env") == ["ASCEND_RT_VISIBLE_DEVICES=0"]
    assert values(flags, "--name") == ["npubox-cpu"]
    assert "--read-only" in flags and values(flags, "--network") == ["none"]


def test_workspace_user_non_root_invoker_runs_as_itself(tmp_path):
    assert workspace_user(tmp_path, uid=1500, gid=1600) == (1500, 1600)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_workspace_user_root_runs_as_the_folder_owner(tmp_path):
    folder = tmp_path / "ws"
    folder.mkdir()
    os.chown(folder, 1234, 2345)
    assert workspace_user(folder, uid=0, gid=0) == (1234, 2345)
    flags = sealed_flags(RunOptions(image="img", workspace=folder, env_name="cpu"))  # no user given: as invoked
    assert values(flags, "--user") == ["1234:2345"]


def test_workspace_user_root_with_root_folder_runs_as_image_user(tmp_path):
    folder = tmp_path / "ws"
    folder.mkdir()
    if os.geteuid() == 0:
        os.chown(folder, 0, 0)
    if folder.stat().st_uid != 0:
        pytest.skip("needs a root-owned folder")
    assert workspace_user(folder, uid=0, gid=0) == (IMAGE_UID, IMAGE_UID) == (1000, 1000)


@pytest.mark.skipif(os.geteuid() != 0, reason="prepare_workspace only hands the folder over when run as root")
def test_prepare_workspace_as_root_hands_the_folder_to_the_image_user(tmp_path):
    ws = prepare_workspace(tmp_path / "ws")
    for sub in ("", "models", "data", "checkpoints", "eval", "logs"):
        st = (ws / sub).stat()
        assert (st.st_uid, st.st_gid) == (IMAGE_UID, IMAGE_UID), sub
    assert workspace_user(ws) == (IMAGE_UID, IMAGE_UID)


def test_run_request_accepts_a_valid_one():
    loaded = validate_run_request("cpu", "tiny", "env")
    assert loaded.name == "cpu"


def test_run_request_refuses_unknown_phase():
    with pytest.raises(NpuboxError) as info:
        validate_run_request("cpu", "tiny", "bogus")
    message = str(info.value)
    assert message.startswith("unknown phase 'bogus'; phases: ")
    for phase in PHASES:
        assert phase in message
    assert {"env", "convert", "preprocess", "pretrain", "eval"} <= set(PHASES)


def test_run_request_refuses_unknown_env():
    with pytest.raises(NpuboxError, match=r"^unknown env 'gpu'; known envs: .*\bcpu\b"):
        validate_run_request("gpu", "tiny", "env")


def test_run_request_refuses_unknown_model():
    with pytest.raises(NpuboxError) as info:
        validate_run_request("cpu", "gpt-17", "pretrain")
    message = str(info.value)
    assert "'gpt-17'" in message
    assert "tiny" in message and "qwen25-7b" in message


def test_run_request_refuses_a_model_the_env_does_not_support():
    with pytest.raises(NpuboxError) as info:
        validate_run_request("cpu", "qwen2-7b", "pretrain")  # a known recipe, not in envs/cpu.yaml's models
    assert str(info.value) == "model 'qwen2-7b' is not supported by env 'cpu'; its models: tiny, qwen25-7b"
