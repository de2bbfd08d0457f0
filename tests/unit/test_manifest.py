"""Rendered AscendJob / PyTorchJob / sbatch manifests: valid YAML or shell, the node count, image,
devices, and a command that -- run by a shell with the operator's variables -- is the launch we mean."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from llm.errors import NpuboxError
from llm.manifest import render_manifest

IMAGE = "npubox/ascend-mindspeed-llm-2.0.0:0.1.0-0123456789ab"
EXTRA = ["--train-iters", "100", "--save", "/workspace/checkpoints/run one", "it's"]


def expanded_argv(command: str, env: dict[str, str]) -> list[str]:
    """What the pod's / task's shell would exec: run it with `exec` swapped for printf."""
    assert command.startswith("exec python -m llm launch ")
    script = "printf '%s\\n' " + command.removeprefix("exec ")
    out = subprocess.run(
        ["bash", "-c", script], env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def expected_argv(nodes: int, node_rank: str) -> list[str]:
    return [
        "python",
        "-m",
        "llm",
        "launch",
        "--nnodes",
        str(nodes),
        "--node-rank",
        node_rank,
        "--master-addr",
        "head",
        "--master-port",
        "29500",
        "pretrain",
        "--model",
        "qwen25-7b",
        *EXTRA,
    ]


@pytest.mark.parametrize(
    "target, api, kind, replicas_key, container",
    [
        ("ascendjob", "mindxdl.gitee.com/v1", "AscendJob", "replicaSpecs", "ascend"),
        ("pytorchjob", "kubeflow.org/v1", "PyTorchJob", "pytorchReplicaSpecs", "pytorch"),
    ],
)
@pytest.mark.parametrize("nodes", [1, 4])
def test_kubernetes_jobs(target, api, kind, replicas_key, container, nodes):
    doc = yaml.safe_load(render_manifest(target, nodes, IMAGE, "qwen25-7b", "pretrain", 8, EXTRA, accelerator="npu"))
    assert doc["apiVersion"] == api and doc["kind"] == kind
    assert doc["metadata"]["name"] == "npubox-qwen25-7b-pretrain"
    specs = doc["spec"][replicas_key]
    assert specs["Master"]["replicas"] == 1
    assert sum(s["replicas"] for s in specs.values()) == nodes
    assert ("Worker" in specs) == (nodes > 1)
    for spec in specs.values():
        (c,) = spec["template"]["spec"]["containers"]
        assert c["name"] == container and c["image"] == IMAGE
        assert (
            c["resources"]["limits"]["huawei.com/Ascend910"] == 8 == c["resources"]["requests"]["huawei.com/Ascend910"]
        )
        assert {"name": "workspace", "mountPath": "/workspace"} in c["volumeMounts"]
        shell, flag, command = c["command"]
        assert (shell, flag) == ("/bin/bash", "-c")
        assert expanded_argv(command, {"RANK": "3", "MASTER_ADDR": "head", "MASTER_PORT": "29500"}) == expected_argv(
            nodes, "3"
        )
    if target == "ascendjob":
        assert doc["spec"]["runPolicy"]["schedulingPolicy"]["minAvailable"] == nodes
        assert doc["spec"]["schedulerName"] == "volcano"
        ports = specs["Master"]["template"]["spec"]["containers"][0]["ports"]
        assert ports == [{"containerPort": 2222, "name": "ascendjob-port"}]


def test_slurm_script(tmp_path):
    text = render_manifest("slurm", 2, IMAGE, "qwen25-7b", "pretrain", 4, EXTRA, accelerator="npu")
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert text.startswith("#!/bin/bash\n")
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --ntasks-per-node=1\n" in text
    assert IMAGE in text and "--network host" in text
    assert re.findall(r"--device=/dev/davinci(\d+) ", text) == ["0", "1", "2", "3"]
    assert "huawei.com/Ascend910" in text
    # The LAUNCH line as the batch shell assigns it, then as the container's shell expands it.
    launch = subprocess.run(
        ["bash", "-c", text.split("\nLAUNCH=", 1)[1].split("\n", 1)[0].join(["LAUNCH=", '\nprintf %s "$LAUNCH"'])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert expanded_argv(launch, {"SLURM_NODEID": "1", "MASTER_ADDR": "head", "MASTER_PORT": "29500"}) == expected_argv(
        2, "1"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target="helm"), "--target 'helm': expected one of ascendjob, pytorchjob, slurm"),
        (dict(nodes=0), "--nodes 0: expected at least 1"),
        (dict(image="npubox/x y"), "image 'npubox/x y'"),
        (dict(devices_per_node=0), "devices per node 0"),
    ],
)
def test_bad_input(kwargs, message):
    args = dict(
        target="ascendjob",
        nodes=2,
        image=IMAGE,
        model="qwen25-7b",
        phase="pretrain",
        devices_per_node=8,
        accelerator="npu",
    )
    args.update(kwargs)
    with pytest.raises(NpuboxError) as e:
        render_manifest(**args)
    assert message in str(e.value)
