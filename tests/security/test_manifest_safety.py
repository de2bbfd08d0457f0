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
    assert "# no accelerator (cpu)" in text


def test_a_slurm_script_for_cuda_passes_the_gpus_not_npus():
    text = commands.manifest("cuda-mcore", "slurm", 2, "tiny", "pretrain", None, [])
    assert "--gpus=all" in text and "davinci" not in text and "/usr/local/Ascend" not in text


def test_an_ascendjob_for_a_cpu_env_is_refused():
    with pytest.raises(NpuboxError, match="--target ascendjob is MindCluster's job for Ascend NPUs, and this env's"):
        commands.manifest("cpu", "ascendjob", 2, "tiny", "pretrain", None, [])


def test_an_ascend_manifest_renders_for_the_specs_own_architecture_on_any_host(monkeypatch):
    import llm.env.arch

    monkeypatch.setattr(llm.env.arch, "host_arch", lambda: "x86_64")  # no Ascend lock for x86_64 is needed
    text = commands.manifest("ascend-mindspeed-llm-2.0.0", "ascendjob", 2, "qwen25-7b", "pretrain", None, [])
    assert container_of(text)["image"].startswith("npubox/ascend-mindspeed-llm-2.0.0:2.0.0-")
    assert "huawei.com/Ascend910" in text
