"""Shared by the mindspeed-llm engine's tests: the stacks' commits, a workspace with what `llm preprocess` and
`llm convert` leave, launch options, and torchrun's own reading of its options."""

from __future__ import annotations

from _pretrain_fixtures import write_dataset
from llm.checkpoint import TRACKER_FILE
from llm.torchrun import build_parser as launch_parser
from llm.workspace import Workspace

V200, V230, V2600 = (
    "3a712f58635be8825189c65a89f27a90dc458765",
    "1bdd97003882083da7c951fceedd71f96116be2f",
    "57c33296592ed12f59396e59461a5bd8d0d589d0",
)
ML_RC1, ML_MASTER = "f33da62b9017d12aca8364137936ab0d014df428", "17b97452f7ed1a86e0d54b119828efd4f1c5b199"


def workspace_for(root, model: str, tp: int, pp: int) -> Workspace:
    """Data and a converted checkpoint where `llm preprocess` and `llm convert` put them (the checkpoint's rank
    files are not read)."""
    ws = Workspace(root)
    write_dataset(ws.text_dataset(model), count=2)
    converted = ws.converted_dir(model, tp, pp)
    converted.mkdir(parents=True)
    (converted / TRACKER_FILE).write_text("1")
    return ws


def launch_ns(nnodes: int, node_rank: int, master_addr: str = "10.1.2.3"):
    return launch_parser().parse_args(
        [
            "--nproc",
            "8",
            "--nnodes",
            str(nnodes),
            "--node-rank",
            str(node_rank),
            "--master-addr",
            master_addr,
            "pretrain",
        ]
    )


def torchrun_options(args: list[str]) -> dict:
    """torchrun's own reading of its options (so --nproc_per_node 8 == --nproc-per-node=8, defaults filled)."""
    from torch.distributed.run import get_args_parser

    ns = vars(get_args_parser().parse_args([*args, "pretrain_gpt.py"]))
    return {k: v for k, v in ns.items() if k not in ("training_script", "training_script_args")}
