"""The AscendJob / PyTorchJob / Slurm manifests start the mindspeed-llm engine as its example script would: what
each node runs in its container -- the pod's command expanded with the operator's variables, or the `llm launch`
that `invoke run` composes from a Slurm node's command line -- has the script's DISTRIBUTED_ARGS for that node as
torchrun options, with the script's flags for pretrain_gpt.py."""

from __future__ import annotations

import pytest
import yaml

from _example_scripts import flag_map
from _manifest_nodes import node_run_call, pod_argv, run_script
from _mindspeed_fixtures import V200, torchrun_options, workspace_for
from llm.env import commands
from llm.env.multinode import phase_command
from llm.pretrain import split_engine
from llm.pretrain.mindspeed_llm.run import make_plan
from llm.torchrun import build_parser as launch_parser

ENV = "ascend-mindspeed-llm-2.0.0"
EXTRA = ["--engine", "mindspeed-llm", "--stack", V200, "--train-iters", "100"]
SLURM_MASTER = "10.1.2.3"  # what the stand-in scontrol answers (tests/unit/_manifest_nodes.py)


def container_commands(target: str, tmp_path, monkeypatch) -> list[list[str]]:
    """What node 0 and node 1 run in their containers, node 0's address being `head` (Slurm: SLURM_MASTER)."""
    text = commands.manifest(ENV, target, 2, "qwen25-7b", "pretrain", None, EXTRA)
    if target == "slurm":
        out = []
        for node_argv in run_script(text, tmp_path).values():
            (env, model, phase, extra, _), kwargs = node_run_call(node_argv, monkeypatch)
            out.append(phase_command(model, phase, extra, kwargs["launch"]))  # as run_phase hands it to the container
        return out
    doc = yaml.safe_load(text)
    specs = doc["spec"]["replicaSpecs" if target == "ascendjob" else "pytorchReplicaSpecs"]
    (container,) = specs["Master"]["template"]["spec"]["containers"]
    return [pod_argv(container, {"RANK": str(n), "MASTER_ADDR": "head", "MASTER_PORT": "6000"}) for n in (0, 1)]


@pytest.mark.parametrize("target", ["ascendjob", "pytorchjob", "slurm"])
def test_each_node_launches_the_engine_as_the_script_would(target, tmp_path, monkeypatch):
    ws = workspace_for(tmp_path, "qwen25-7b", 4, 2)
    master = SLURM_MASTER if target == "slurm" else "head"
    for node, argv in enumerate(container_commands(target, tmp_path, monkeypatch)):
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
            master,
            "--master_port",
            "6000",
        ]  # the 2.0.0 script's DISTRIBUTED_ARGS for this node
        assert torchrun_options(plan.torchrun_args[:program_at]) == torchrun_options(script_args)
        assert flag_map(plan.composed.argv)["--train-iters"] == ("100",)
        assert plan.world_size == 16
