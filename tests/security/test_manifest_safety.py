"""Cluster manifests ask for the env's own accelerator (issue 19, case 10; issue 21): Ascend NPUs only for npu
envs, NVIDIA GPUs for cuda envs, no device at all for cpu; and an Ascend env renders on a host of any arch."""

from __future__ import annotations

import pytest
import yaml

from llm.env import commands
from llm.errors import NpuboxError

ASCEND = "huawei.com/Ascend910"


def container_of(text: str) -> dict:
    doc = yaml.safe_load(text)
    specs = doc["spec"].get("pytorchReplicaSpecs") or doc["spec"]["replicaSpecs"]
    (container,) = specs["Master"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    "env, resources",
    [
        ("cpu", None),
        ("cuda-mcore", {"limits": {"nvidia.com/gpu": 8}, "requests": {"nvidia.com/gpu": 8}}),
        (
            "ascend-mindspeed-llm-2.0.0",
            {"limits": {"huawei.com/Ascend910": 8}, "requests": {"huawei.com/Ascend910": 8}},
        ),
    ],
)
def test_a_pytorchjob_asks_for_the_envs_own_devices(env, resources):
    container = container_of(commands.manifest(env, "pytorchjob", 2, "tiny", "pretrain", None, []))
    assert container.get("resources") == resources


def test_a_slurm_script_for_cpu_passes_no_device():
    text = commands.manifest("cpu", "slurm", 2, "tiny", "pretrain", None, [])
    assert "davinci" not in text and "/usr/local/Ascend" not in text and "huawei.com" not in text
    assert "--gpus" not in text
    assert "with no accelerator (cpu)" in text


@pytest.mark.parametrize("env", ["cuda-mcore", "ascend-mindspeed-llm-2.0.0"])
def test_a_slurm_script_leaves_the_devices_to_each_nodes_invoke_run(env):
    """No device list of the rendering host's: each node's `invoke run` discovers its own (issue 21)."""
    text = commands.manifest(env, "slurm", 2, "qwen25-7b" if "ascend" in env else "tiny", "pretrain", None, [])
    assert "--gpus" not in text and "davinci" not in text and "/usr/local/Ascend" not in text
    assert "docker run" not in text and ' run --node-rank "$SLURM_NODEID" ' in text


def test_an_ascendjob_for_a_cpu_env_is_refused():
    with pytest.raises(NpuboxError, match="--target ascendjob is MindCluster's job for Ascend NPUs, and this env's"):
        commands.manifest("cpu", "ascendjob", 2, "tiny", "pretrain", None, [])


def test_an_ascend_manifest_renders_for_the_specs_own_architecture_on_any_host(monkeypatch):
    import llm.env.arch

    monkeypatch.setattr(llm.env.arch, "host_arch", lambda: "x86_64")  # no Ascend lock for x86_64 is needed
    text = commands.manifest("ascend-mindspeed-llm-2.0.0", "ascendjob", 2, "qwen25-7b", "pretrain", None, [])
    assert container_of(text)["image"].startswith("npubox/ascend-mindspeed-llm-2.0.0:2.0.0-")
    assert "huawei.com/Ascend910" in text


BAD_INPUTS = [
    # (arguments of commands.manifest, what the refusal says)
    (
        dict(nodes="99999999999999999999"),
        "--nodes '99999999999999999999': expected a whole number from 1 to 2147483647",
    ),
    (dict(nodes=0), "--nodes 0: expected a whole number from 1 to 2147483647"),
    (dict(nodes="-2"), "--nodes '-2': expected a whole number from 1"),
    (dict(nodes="two"), "--nodes 'two': expected a whole number"),
    (dict(nodes="2.5"), "--nodes '2.5': expected a whole number"),
    (
        dict(workspace="My PVC!"),
        "--workspace 'My PVC!': on Kubernetes the workspace is a PersistentVolumeClaim, and a "
        "claim's name must be a DNS-1123 subdomain",
    ),
    (dict(workspace="-pvc"), "must be a DNS-1123 subdomain"),
    (dict(workspace="p" * 254), "must be a DNS-1123 subdomain: at most 253"),
    (dict(target="slurm", workspace="/shared/x,source=/etc"), "contains ',', which the Docker engine would read"),
    (dict(target="slurm", workspace="/etc"), "/etc is a system folder"),
    (dict(target="helm"), "--target 'helm': expected one of ascendjob, pytorchjob, slurm"),
    (dict(master_port="70000"), "--master-port '70000': expected a whole number from 1 to 65535"),
    (dict(socket_ifname="eth0 eth1"), "--socket-ifname 'eth0 eth1': expected a network interface name"),
    (dict(launch_env=["HCCL CONNECT=1"]), "--launch-env 'HCCL CONNECT=1': expected KEY=VALUE"),
    (dict(launch_env=["HCCL_CONNECT_TIMEOUT"]), "--launch-env 'HCCL_CONNECT_TIMEOUT': expected KEY=VALUE"),
    (dict(devices_per_node="4"), "--devices-per-node '4' was given, but this env runs on the CPU"),
    (dict(target="slurm", env="cuda-mcore", devices_per_node="4"), "under Slurm each node's `invoke run` uses every"),
    (dict(env="cuda-mcore", devices_per_node="0"), "--devices-per-node '0': expected a whole number from 1"),
    (dict(device_gid="1000"), "--device-gid '1000': the group of the Ascend cards; this env's accelerator is cpu"),
    (dict(env="ascend-mindspeed-llm-2.0.0", model="qwen25-7b", device_gid="0"), "--device-gid '0': expected a whole"),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS, ids=[m[:40] for _, m in BAD_INPUTS])
def test_bad_input_is_refused_naming_the_rule(kwargs, message):
    args = dict(
        env="cpu", target="pytorchjob", nodes=2, model="tiny", phase="pretrain", devices_per_node=None, extra=[]
    )
    args.update(kwargs)
    with pytest.raises(NpuboxError) as e:
        commands.manifest(**args)
    assert message in str(e.value)


@pytest.mark.parametrize("claim", ["npubox-workspace", "team.a-ws", "w", "0ws9"])
def test_claim_names_kubernetes_accepts_render(claim):
    assert f"claimName: {claim}\n" in commands.manifest("cpu", "pytorchjob", 2, "tiny", "pretrain", None, [], claim)


def test_the_command_line_refuses_bad_nodes_in_one_sentence_and_keeps_quoting():
    """Through Invoke as a user types it: no traceback, exit 1; the arguments after -- arrive whole."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]

    def invoke(*args):
        return subprocess.run(
            [sys.executable, "-m", "invoke", "manifest", *args], cwd=repo, capture_output=True, text=True
        )

    for nodes in ("99999999999999999999", "0", "-1", "two"):
        proc = invoke("--nodes", nodes)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"error: --nodes {nodes!r}: expected a whole number"), proc.stderr
    proc = invoke("--env", "cpu", "--target", "pytorchjob", "--", "--save", "my dir", "it's")
    assert proc.returncode == 0, proc.stderr
    args = yaml.safe_load(proc.stdout)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert args["args"][-3:] == ["--save", "my dir", "it's"]
