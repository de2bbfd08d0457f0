"""What each node of a rendered job starts: the Kubernetes pod's command, expanded as kubelet and bash would with the
operator's variables, is the `llm launch` we mean; the sbatch script, run with a stand-in srun, starts on each node
`invoke run` with that node's rank, and `invoke run` parses it into the same Launch a user typing it would get.
User arguments keep their quoting everywhere (`-- --save 'my dir'`), and the launch options pass through."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from _manifest_nodes import node_run_call, pod_argv, run_script
from llm.env import commands
from llm.env.multinode import Launch

EXTRA = ["--train-iters", "100", "--save", "/workspace/checkpoints/run one", "it's", "$(HOME)", "$$", "a\\b"]
LAUNCH_OPTIONS = dict(socket_ifname="eth0", launch_env=["HCCL_CONNECT_TIMEOUT=1800", "HCCL_EXEC_TIMEOUT=600"])


@pytest.mark.parametrize(
    "target, env, model",
    [("ascendjob", "ascend-mindspeed-llm-2.0.0", "qwen25-7b"), ("pytorchjob", "cuda-mcore", "tiny")],
)
@pytest.mark.parametrize("nodes", [1, 4])
def test_each_pod_launches_the_phase_with_its_rank_and_the_options(target, env, model, nodes):
    text = commands.manifest(env, target, nodes, model, "pretrain", None, EXTRA, master_port="29400", **LAUNCH_OPTIONS)
    doc = yaml.safe_load(text)
    specs = doc["spec"].get("pytorchReplicaSpecs") or doc["spec"]["replicaSpecs"]
    for rank, spec in enumerate(specs.values()):
        (container,) = spec["template"]["spec"]["containers"]
        assert container["ports"][0]["containerPort"] == 29400  # the operator's MASTER_PORT comes from this port
        operator_env = {"RANK": str(rank), "MASTER_ADDR": "head", "MASTER_PORT": "29400", "HOME": "/root"}
        assert pod_argv(container, operator_env) == [
            *("python", "-m", "llm", "launch", "--node-rank", str(rank), "--master-addr", "head", "--master-port"),
            *("29400", "--nnodes", str(nodes), "--socket-ifname", "eth0"),
            *("--env", "HCCL_CONNECT_TIMEOUT=1800", "--env", "HCCL_EXEC_TIMEOUT=600", "pretrain", "--model", model),
            *EXTRA,
        ]


def test_each_slurm_node_runs_invoke_run_with_its_rank(tmp_path):
    text = commands.manifest("cpu", "slurm", 2, "tiny", "pretrain", None, EXTRA, master_port="29400", **LAUNCH_OPTIONS)
    argv = run_script(text, tmp_path)
    for node in (0, 1):
        assert argv[node] == [
            *("-m", "invoke", "--search-root", "/shared/npubox", "run", "--node-rank", str(node)),
            *("--master-addr", "10.1.2.3", "--env", "cpu", "--model", "tiny", "--phase", "pretrain"),
            *("--nnodes", "2", "--socket-ifname", "eth0"),
            *("--launch-env", "HCCL_CONNECT_TIMEOUT=1800", "--launch-env", "HCCL_EXEC_TIMEOUT=600"),
            *("--master-port", "29400", "--", *EXTRA),
        ]


def test_what_a_slurm_node_starts_is_invoke_runs_own_sealed_run(tmp_path, monkeypatch):
    """The node's argv, given to tasks.py's `run` through Invoke, reaches commands.run_phase as the Launch and phase
    arguments a user typing `invoke run --nnodes 2 --node-rank 1 ...` there would give it."""
    text = commands.manifest(
        "cpu", "slurm", 2, "tiny", "pretrain", None, EXTRA, workspace="/shared/ws", **LAUNCH_OPTIONS
    )
    node_argv = run_script(text, tmp_path)[1]
    assert node_argv[:4] == ["-m", "invoke", "--search-root", "/shared/npubox"]
    args, kwargs = node_run_call(node_argv, monkeypatch)
    assert args == ("cpu", "tiny", "pretrain", EXTRA, Path("/shared/ws"))
    assert kwargs["launch"] == Launch(
        nnodes=2,
        node_rank=1,
        master_addr="10.1.2.3",
        master_port=6000,
        socket_ifname="eth0",
        worker_env=("HCCL_CONNECT_TIMEOUT=1800", "HCCL_EXEC_TIMEOUT=600"),
    )
    assert kwargs["image"] is None and kwargs["devices"] is None  # the node's own image tag and devices


def test_a_slurm_workspace_with_spaces_reaches_the_node_whole(tmp_path):
    text = commands.manifest("cpu", "slurm", 2, "tiny", "pretrain", None, [], workspace="/shared/my work space")
    argv = run_script(text, tmp_path)
    assert argv[0][argv[0].index("--workspace") + 1] == "/shared/my work space"
