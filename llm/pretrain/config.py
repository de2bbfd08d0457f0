"""Pretraining flags: one typed config, its argparse, and the defaults a `--model` implies.

The recipe gives the parallel layout, sequence length and batch sizes (``parallelism.pretrain``) and the
learning rates, step count and precision (``training``). The other defaults are those of MindSpeed-LLM 2.0.0
``examples/mcore/qwen25/pretrain_qwen25_7b_32k_ptd.sh``: ``--lr-decay-style cosine --lr-warmup-fraction 0.01
--weight-decay 1e-1 --clip-grad 1.0 --adam-beta1 0.9 --adam-beta2 0.95 --init-method-std 0.01 --seed 42``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from llm.checkpoint import TRACKER_FILE
from llm.errors import NpuboxError
from llm.fusions import parse_fusions
from llm.recipes import Recipe, load_recipe
from llm.workspace import Workspace


@dataclass(frozen=True)
class PretrainConfig:
    model: str
    data_path: str  # indexed dataset prefix, without .bin/.idx
    tp: int
    pp: int
    seq_length: int
    micro_batch_size: int
    global_batch_size: int
    train_iters: int
    lr: float
    min_lr: float
    warmup: int  # iterations of linear warmup, then cosine decay to min_lr at train_iters
    weight_decay: float
    clip_grad: float
    adam_beta1: float
    adam_beta2: float
    init_method_std: float
    seed: int
    bf16: bool
    load: str | None  # checkpoint directory to start from (model only, or a full resume)
    save: str | None
    save_interval: int
    keep_last: int | None  # keep this many iteration directories in --save (None: all)
    exit_interval: int | None  # stop (after saving) at the first iteration that is a multiple
    log_interval: int
    metrics_path: str | None
    distributed_optimizer: bool  # shard optimizer state over data-parallel ranks (megatron's DistributedOptimizer)
    progress: bool
    attention: str | None  # core attention, "sdpa" or "unfused" (llm.sdpa_attention); None: the device's default
    fusions: tuple[str, ...]  # kernel fusions to turn on (llm.fusions)

    def num_microbatches(self, dp: int) -> int:
        return self.global_batch_size // (self.micro_batch_size * dp)

    def check(self, world_size: int) -> int:
        """Validate against the world size; return the data-parallel size."""
        if world_size % (self.tp * self.pp):
            raise NpuboxError(
                f"world size {world_size} is not a multiple of --tp {self.tp} × --pp {self.pp}; "
                "launch a multiple of tp × pp processes"
            )
        dp = world_size // (self.tp * self.pp)
        if self.global_batch_size % (self.micro_batch_size * dp):
            raise NpuboxError(
                f"--global-batch-size {self.global_batch_size} is not a multiple of "
                f"--micro-batch-size {self.micro_batch_size} × data-parallel size {dp}"
            )
        return dp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm pretrain",
        description=(
            "Pretrain a megatron-core GPTModel built from a recipe on a Megatron indexed dataset. "
            "Every flag defaults from the recipe and the workspace, so `--model M` alone trains on "
            "data/M/sample_text_document, starts from checkpoints/M/hf-tpT-ppP when it exists (or "
            "resumes checkpoints/M/pretrain), and saves to checkpoints/M/pretrain. Launch several "
            "processes with `python -m llm launch pretrain ...`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--model", required=True, help="recipe name (llm/recipes/<name>.yaml)")
    a("--data-path", help="indexed dataset prefix (PREFIX.bin/.idx); default: the workspace's sample data")
    a("--tp", type=int, help="tensor-parallel size; default: the recipe's")
    a("--pp", type=int, help="pipeline-parallel size; default: the recipe's")
    a("--seq-length", type=int, help="tokens per sample; default: the recipe's")
    a("--micro-batch-size", type=int, help="samples per micro-batch per data-parallel rank; default: the recipe's")
    a(
        "--global-batch-size",
        type=int,
        help="samples per optimizer step (gradient accumulation fills it); default: the recipe's",
    )
    a("--train-iters", type=int, help="optimizer steps; default: the recipe's training.train_iters")
    a("--lr", type=float, help="peak learning rate; default: the recipe's training.lr")
    a(
        "--min-lr",
        type=float,
        help="learning rate at the end of the cosine decay; default: the recipe's training.min_lr",
    )
    a("--warmup", type=int, help="linear warmup iterations; default: 1%% of --train-iters (--lr-warmup-fraction 0.01)")
    a("--weight-decay", type=float, default=0.1)
    a("--clip-grad", type=float, default=1.0, help="clip the global gradient norm to this value")
    a("--adam-beta1", type=float, default=0.9)
    a("--adam-beta2", type=float, default=0.95)
    a("--init-method-std", type=float, default=0.01, help="std of the random init (used when nothing is loaded)")
    a("--seed", type=int, default=42)
    bf16 = p.add_mutually_exclusive_group()
    bf16.add_argument(
        "--bf16",
        dest="bf16",
        action="store_true",
        default=None,
        help="train in bf16; default: the recipe's training.precision",
    )
    bf16.add_argument("--fp32", dest="bf16", action="store_false", help="train in fp32")
    a(
        "--load",
        help="checkpoint directory to start from: a converted one (weights only) or a pretrain one (exact resume)",
    )
    a("--save", help="checkpoint directory to write; default: checkpoints/<model>/pretrain")
    a("--save-interval", type=int, help="save every N iterations (and at the end); default: --train-iters")
    a("--keep-last", type=int, help="keep only the last K checkpoints in --save")
    a("--exit-interval", type=int, help="save and stop at the first iteration that is a multiple of N")
    a("--log-interval", type=int, default=1, help="print a log line every N iterations (JSONL gets every one)")
    a(
        "--metrics",
        dest="metrics_path",
        help="JSONL metrics file; default: logs/pretrain-<model>.jsonl in the workspace",
    )
    dopt = p.add_mutually_exclusive_group()
    dopt.add_argument(
        "--distributed-optimizer",
        dest="distributed_optimizer",
        action="store_true",
        default=True,
        help="shard optimizer state across data-parallel ranks (megatron-core's DistributedOptimizer)",
    )
    dopt.add_argument("--no-distributed-optimizer", dest="distributed_optimizer", action="store_false")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar (log lines only)")
    a(
        "--attention",
        choices=["sdpa", "unfused"],
        help="core attention: torch's scaled_dot_product_attention or megatron-core's unfused one; "
        "default: sdpa on CUDA and CPU, unfused on NPU",
    )
    a(
        "--fusions",
        default="none",
        help="comma-separated kernel fusions that need no Apex/Transformer Engine: "
        "swiglu, bias-dropout-add, cross-entropy, adam (fused AdamW), compile (torch.compile), or none",
    )
    return p


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and not value > 0:  # `not >`: nan is refused too
        raise NpuboxError(f"--{name.replace('_', '-')} is {value}; expected a positive number")


def _finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise NpuboxError(f"--{name.replace('_', '-')} is {value}; expected a finite number")


def check_resume(load: str, cfg_values: dict) -> None:
    """A pretrain checkpoint (optimizer state inside) continues one run: refuse a resume whose data order,
    sample shape or step count would silently differ from the run that wrote it."""
    from llm import checkpoint

    iteration = checkpoint.read_latest(load)
    if iteration == "release":
        return
    # rank 0's file: mp_rank_00 (pp == 1) or mp_rank_00_000 (any pp > 1)
    layouts = [pp for pp in (1, 2) if checkpoint.rank_file(load, iteration, 0, 0, pp).is_file()]
    if not layouts:
        return  # training's reader names what is missing
    state = checkpoint.load_rank(load, iteration, 0, 0, layouts[0])
    if "optimizer" not in state:
        return  # weights only (what convert writes): a new run starts from them
    args = state.get("args")
    step = int(state.get("iteration", iteration))
    if cfg_values["train_iters"] <= step:
        raise NpuboxError(
            f"--train-iters {cfg_values['train_iters']}: --load {load} is already at iteration {step}; pass a larger "
            f"--train-iters to continue it, or --save to another folder to start a new run"
        )
    changed = [
        f"--{k.replace('_', '-')} {getattr(args, k)} (now {cfg_values[k]})"
        for k in ("data_path", "seq_length", "global_batch_size")
        if getattr(args, k, None) is not None and str(getattr(args, k)) != str(cfg_values[k])
    ]
    if changed:
        raise NpuboxError(
            f"--load {load} (iteration {step}) was trained with {', '.join(changed)}; resuming would silently change "
            "which samples come next: resume with the same values, or start a new run in another --save from its "
            f"weights (`python -m llm convert --from mcore --to mcore --load-dir {load} --save-dir DIR`)"
        )


def check_dataset(prefix: str, model: str) -> None:
    """Refuse a ``--data-path`` prefix that is not a whole Megatron indexed dataset (both files, agreeing): every
    engine checks the prefixes it trains on with this, before anything starts."""
    if not Path(f"{prefix}.idx").is_file() or not Path(f"{prefix}.bin").is_file():
        raise NpuboxError(
            f"--data-path {prefix}: {prefix}.bin/.idx not found; expected a Megatron indexed dataset "
            f"(make one with `python -m llm preprocess --model {model}`)"
        )
    from llm.indexed_dataset import check_indexed_dataset

    check_indexed_dataset(prefix)


def config_from_args(ns: argparse.Namespace, workspace: Workspace | None = None) -> PretrainConfig:
    """Fill what the command line left out from the recipe and the workspace layout. The dataset is the engine's to
    check (:func:`check_dataset`): the mindspeed-llm engine's may come after ``--``."""
    recipe: Recipe = load_recipe(ns.model)
    ws = workspace or Workspace.from_env()
    par = recipe.defaults("pretrain")
    training = recipe.training
    tp = ns.tp or par.tp
    pp = ns.pp or par.pp
    seq_length = ns.seq_length or par.seq_length or 1024
    mbs = ns.micro_batch_size or par.micro_batch_size or 1
    gbs = ns.global_batch_size or par.global_batch_size or mbs
    train_iters = ns.train_iters or training.train_iters
    for name in (
        "tp",
        "pp",
        "seq_length",
        "micro_batch_size",
        "global_batch_size",
        "train_iters",
        "lr",
        "save_interval",
        "keep_last",
        "exit_interval",
        "log_interval",
    ):
        _positive(name, getattr(ns, name, None))
    for name in ("lr", "min_lr", "weight_decay", "clip_grad", "adam_beta1", "adam_beta2", "init_method_std"):
        _finite(name, getattr(ns, name, None))
    if seq_length > recipe.architecture.max_position_embeddings:
        raise NpuboxError(
            f"--seq-length {seq_length} exceeds recipe {recipe.name}'s max_position_embeddings "
            f"({recipe.architecture.max_position_embeddings})"
        )
    data_path = ns.data_path or str(ws.text_dataset(ns.model))
    save = ns.save or str(ws.pretrain_dir(ns.model))
    load = ns.load
    if load is None:
        converted = ws.converted_dir(ns.model, tp, pp)
        if (Path(save) / TRACKER_FILE).is_file():
            load = save  # resume our own run
        elif (converted / TRACKER_FILE).is_file():
            load = str(converted)
    elif not (Path(load) / TRACKER_FILE).is_file():
        raise NpuboxError(f"--load {load}: {TRACKER_FILE} not found; expected a Megatron checkpoint directory")
    if load is not None:
        check_resume(
            load,
            {
                "train_iters": train_iters,
                "data_path": str(data_path),
                "seq_length": seq_length,
                "global_batch_size": gbs,
            },
        )
    return PretrainConfig(
        model=ns.model,
        data_path=str(data_path),
        tp=tp,
        pp=pp,
        seq_length=seq_length,
        micro_batch_size=mbs,
        global_batch_size=gbs,
        train_iters=train_iters,
        lr=ns.lr if ns.lr is not None else training.lr,
        min_lr=ns.min_lr if ns.min_lr is not None else training.min_lr,
        warmup=ns.warmup if ns.warmup is not None else math.ceil(0.01 * train_iters),
        weight_decay=ns.weight_decay,
        clip_grad=ns.clip_grad,
        adam_beta1=ns.adam_beta1,
        adam_beta2=ns.adam_beta2,
        init_method_std=ns.init_method_std,
        seed=ns.seed,
        bf16=ns.bf16 if ns.bf16 is not None else training.precision == "bf16",
        load=load,
        save=save,
        save_interval=ns.save_interval or train_iters,
        keep_last=ns.keep_last,
        exit_interval=ns.exit_interval,
        log_interval=ns.log_interval,
        metrics_path=ns.metrics_path or str(ws.logs / f"pretrain-{ns.model}.jsonl"),
        distributed_optimizer=ns.distributed_optimizer,
        progress=ns.progress,
        attention=ns.attention,
        fusions=parse_fusions(ns.fusions),
    )


def parse_config(argv: list[str], workspace: Workspace | None = None) -> PretrainConfig:
    """The mcore engine's config, its dataset checked."""
    cfg = config_from_args(build_parser().parse_args(argv), workspace)
    check_dataset(cfg.data_path, cfg.model)
    return cfg
