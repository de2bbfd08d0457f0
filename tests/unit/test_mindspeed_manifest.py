"""The AscendJob / PyTorchJob / Slurm manifests start the mindspeed-llm engine as its example script would: the pod's
command, expanded by a shell with the operator's variables, is a `llm launch` whose torchrun options are the script's
DISTRIBUTED_ARGS for that node, with the script's flags for pretrain_gpt.py."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from _example_scripts import flag_map
from _mindspeed_fixtures import V200, torchrun_options, workspace_for
from llm.manifest import render_manifest
from llm.pretrain import split_engine
from llm.pretrain.mindspeed_llm.run import make_plan
from llm.torchrun import build_parser as launch_parser

IMAGE = "npubox/ascend-mindspeed-llm-2.0.0:0.1.0-0123456789ab"


def pod_command(target: str, nodes: int) -> str:
    text = render_manifest(
        target,
        nodes,
        IMAGE,
        "qwen25-7b",
        "pretrain",
        8,
        ["--engine", "mindspeed-llm", "--stack", V200, "--train-iters", "100"],
        accelerator="npu",
    )
    if target == "slurm":
        line = next(line for line in text.splitlines() if line.startswith("LAUNCH="))
        return subprocess.run(
            ["bash", "-c", f'{line}; printf %s "$LAUNCH"'], capture_output=True, text=True, check=True
        ).stdout
    doc = yaml.safe_load(text)
    specs = doc["spec"]["replicaSpecs" if target == "ascendjob" else "pytorchReplicaSpecs"]
    return specs["Master"]["template"]["spec"]["containers"][0]["command"][2]


def expanded(command: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + command.removeprefix("exec ")],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


@pytest.mark.parametrize(
    "target, rank_variable", [("ascendjob", "RANK"), ("pytorchjob", "RANK"), ("slurm", "SLURM_NODEID")]
)
def test_each_node_launches_the_engine_as_the_script_would(target, rank_variable, tmp_path):
    ws = workspace_for(tmp_path, "qwen25-7b", 4, 2)
    for node in (0, 1):
        argv = expanded(
            pod_command(target, 2), {rank_variable: str(node), "MASTER_ADDR": "head", "MASTER_PORT": "6000"}
        )
        assert argv[:4] == ["python", "-m", "llm", "launch"]
        ns = launch_parser().parse_args(["--nproc", "8", *argv[4:]])  # the pod's 8 cards, as detect() finds them
        engine, phase_args = split_engine(ns.phase_args)
        assert engine == "mindspeed-llm"
        plan, _ = make_plan(phase_args, ns, devices=8, workspace=ws)
        program_at = plan.torchrun_args.index(str(plan.program))
        script_args = [
            "--nproc_per_node",
            "8",
            "--nnodes",
            "2",
            "--node_rank",
            str(node),
            "--master_addr",
            "head",
            "--master_port",
            "6000",
        ]  # the 2.0.0 script's DISTRIBUTED_ARGS for this node
        assert torchrun_options(plan.torchrun_args[:program_at]) == torchrun_options(script_args)
        assert flag_map(plan.composed.argv)["--train-iters"] == ("100",)
        assert plan.world_size == 16
