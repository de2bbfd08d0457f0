"""A training run's state, saved and resumed in Megatron's checkpoint layout (see :mod:`llm.checkpoint`).

    <save>/iter_0000010/mp_rank_TT[_PPP]/model_optim_rng.pt    model, optimizer, scheduler, RNG, args
    <save>/iter_0000010/mp_rank_TT[_PPP]/distrib_optim.pt      distributed optimizer's state (when used)
    <save>/latest_checkpointed_iteration.txt                   written last, by rank 0

One file per (TP, PP) rank, written by its data-parallel rank 0, each atomically; every rank then
meets at a barrier, and only after it rank 0 points ``latest_checkpointed_iteration.txt`` at the new
iteration. A run killed while writing leaves ``latest`` on the previous checkpoint, which stays
whole. ``--keep-last K`` removes older iteration directories after ``latest`` moved.

Loading accepts what ``llm convert`` writes (model weights only: training starts at step 0 with a
fresh optimizer) and what this module writes (an exact resume: iteration, consumed samples,
optimizer, LR schedule and RNG state).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm import checkpoint as megatron_ckpt
from llm.atomic import atomic_path
from llm.distributed import DistInfo
from llm.errors import NpuboxError
from llm.pretrain.config import PretrainConfig
from llm.regular_file import require_regular

DISTRIB_OPTIM_FILE = "distrib_optim.pt"


@dataclass
class Loaded:
    path: Path  # the rank file read
    iteration: int  # 0 for a converted checkpoint
    state: dict[str, Any]

    @property
    def resumable(self) -> bool:
        """A pretrain checkpoint (optimizer state inside), not a converted one."""
        return "optimizer" in self.state and "opt_param_scheduler" in self.state


def read(load_dir: str, cfg: PretrainConfig, dist: DistInfo) -> Loaded:
    iteration = megatron_ckpt.read_latest(load_dir)
    tp, pp = megatron_ckpt.find_layout(load_dir, iteration)
    if (tp, pp) != (cfg.tp, cfg.pp):
        raise NpuboxError(
            f"--load {load_dir}: checkpoint is split tp={tp} pp={pp} but this run uses --tp {cfg.tp} --pp {cfg.pp}; "
            f"run with --tp {tp} --pp {pp} or convert it to the new split with `python -m llm convert`"
        )
    state = megatron_ckpt.load_rank(load_dir, iteration, dist.tp_rank, dist.pp_rank, cfg.pp)
    path = megatron_ckpt.rank_file(load_dir, iteration, dist.tp_rank, dist.pp_rank, cfg.pp)
    loaded = Loaded(path, 0, state)
    if loaded.resumable:
        loaded.iteration = int(state.get("iteration", iteration))
    return loaded


def load_model(loaded: Loaded, model) -> None:
    """Copy the checkpoint's weights into this rank's GPTModel; names and shapes must match."""
    weights = {k: v for k, v in loaded.state["model"].items() if not k.endswith("._extra_state")}
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise NpuboxError(f"{loaded.path}: weights do not fit the model: {str(e).splitlines()[-1].strip()}") from None
    missing = [k for k in result.missing_keys if not k.endswith("._extra_state")]
    if missing or result.unexpected_keys:
        raise NpuboxError(
            f"{loaded.path}: state dict does not match the recipe's model: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {result.unexpected_keys[:3]}{'...' if len(result.unexpected_keys) > 3 else ''}"
        )


def restore_training_state(
    loaded: Loaded, optimizer, scheduler, accel, use_distributed_optimizer: bool
) -> tuple[int, int]:
    """Optimizer, LR schedule and RNG from a pretrain checkpoint; returns (iteration, consumed samples)."""
    state = loaded.state
    saved_with = bool(getattr(state.get("args"), "use_distributed_optimizer", use_distributed_optimizer))
    if saved_with != use_distributed_optimizer:
        raise NpuboxError(
            f"--load {loaded.path.parent.parent.parent}: saved {'with' if saved_with else 'without'} the distributed "
            f"optimizer, this run {'does not use' if saved_with else 'uses'} it, and the two optimizer states do not "
            f"convert: resume with {'--distributed-optimizer' if saved_with else '--no-distributed-optimizer'}"
        )
    optimizer.load_state_dict(state["optimizer"])
    if use_distributed_optimizer:
        load_parameter_state(optimizer, loaded.path.with_name(DISTRIB_OPTIM_FILE))
    scheduler.load_state_dict(state["opt_param_scheduler"])
    accel.set_rng_state(state["rng_state"][0])
    consumed = int(getattr(state.get("args"), "consumed_train_samples", 0))
    return loaded.iteration, consumed


def save(
    cfg: PretrainConfig,
    recipe,
    dist: DistInfo,
    accel,
    model,
    optimizer,
    scheduler,
    iteration: int,
    consumed_samples: int,
    use_distributed_optimizer: bool,
) -> None:
    """Collective: every rank calls it."""
    import torch.distributed as torch_dist

    save_dir = Path(cfg.save)
    args = megatron_ckpt.make_args(
        recipe,
        tp=cfg.tp,
        pp=cfg.pp,
        params_dtype="bf16" if cfg.bf16 else "fp32",
        iteration=iteration,
        consumed_train_samples=consumed_samples,
        seq_length=cfg.seq_length,
        data_path=cfg.data_path,
        micro_batch_size=cfg.micro_batch_size,
        global_batch_size=cfg.global_batch_size,
        train_iters=cfg.train_iters,
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        seed=cfg.seed,
        data_parallel_size=dist.dp,
        use_distributed_optimizer=use_distributed_optimizer,
    )
    state = {
        "model": model.state_dict(),
        "checkpoint_version": megatron_ckpt.CHECKPOINT_VERSION,
        "iteration": iteration,
        "args": args,
        "optimizer": optimizer.state_dict(),
        "opt_param_scheduler": scheduler.state_dict(),
        "rng_state": [accel.rng_state()],
    }
    rank_file = megatron_ckpt.rank_file(save_dir, iteration, dist.tp_rank, dist.pp_rank, cfg.pp)
    if use_distributed_optimizer:  # collective over the data-parallel group; dp rank 0 writes
        save_parameter_state(optimizer, rank_file.with_name(DISTRIB_OPTIM_FILE))
    if dist.dp_rank == 0:
        megatron_ckpt.save_rank(save_dir, iteration, dist.tp_rank, dist.pp_rank, cfg.pp, state)
    torch_dist.barrier()
    if dist.rank == 0:
        megatron_ckpt.write_latest(save_dir, iteration)
        if cfg.keep_last:
            prune(save_dir, cfg.keep_last, keep=iteration)
    torch_dist.barrier()


def _distributed_optimizers(optimizer) -> list:
    """The DistributedOptimizer(s) inside what ``get_megatron_optimizer`` returns (a ChainedOptimizer)."""
    chained = getattr(optimizer, "chained_optimizers", [optimizer])
    return [o for o in chained if hasattr(o, "get_parameter_state_dp_zero")]


def save_parameter_state(optimizer, path: Path) -> None:
    """Megatron's ``distrib_optim.pt``: the main parameters and Adam moments of every data-parallel
    shard, gathered on data-parallel rank 0, which writes them atomically. Collective.

    The file holds what megatron-core's ``ChainedOptimizer.save_parameter_state`` writes (one
    optimizer's ``get_parameter_state_dp_zero()``, or the list of them), written through
    :func:`llm.atomic.atomic_path` instead of a bare ``torch.save``."""
    import torch

    optimizers = _distributed_optimizers(optimizer)
    states = [o.get_parameter_state_dp_zero() for o in optimizers]
    if optimizers[0].data_parallel_group.rank() == 0:
        with atomic_path(path) as tmp:
            torch.save(states[0] if len(states) == 1 else states, tmp)


def load_parameter_state(optimizer, path: Path) -> None:
    """Read what :func:`save_parameter_state` wrote (on data-parallel rank 0, ``weights_only``) and
    scatter each rank its shards. Collective; call after ``optimizer.load_state_dict``.

    megatron-core's ``load_parameter_state_from_dp_zero`` copies every entry of the inner optimizer's
    per-parameter state from the file, which holds ``param``, ``exp_avg`` and ``exp_avg_sq``;
    ``torch.optim.Adam`` (megatron-core's optimizer without Apex or Transformer Engine) also keeps a
    ``step`` there, which the copy would look up in vain (KeyError 'step'): it is set aside while the
    shards are copied. And ``DistributedOptimizer.load_state_dict`` restores that ``step`` as ONE
    tensor shared by every parameter, which Adam then increments once per parameter on each step
    (a wrong bias correction from the first step after resume): each parameter gets its own copy.
    The copy runs without autograd: in fp32 training the main parameters are views of the model's."""
    import torch

    optimizers = _distributed_optimizers(optimizer)
    states: list | None = None
    if optimizers[0].data_parallel_group.rank() == 0:
        require_regular(path, "the distributed optimizer's state, which such a checkpoint has beside each rank file")
        megatron_ckpt.require_whole_torch_file(path)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        states = [saved] if len(optimizers) == 1 else saved
        if len(states) != len(optimizers):
            raise NpuboxError(f"{path}: holds {len(states)} optimizer state(s); this run has {len(optimizers)}")
    for i, opt in enumerate(optimizers):
        inner = opt.optimizer.state
        steps = {param: s.pop("step") for param, s in inner.items() if "step" in s}
        try:
            with torch.no_grad():
                opt.load_parameter_state_from_dp_zero(states[i] if states is not None else None)
        finally:
            for param, step in steps.items():
                inner[param]["step"] = step.clone()


def prune(save_dir: Path, keep_last: int, keep: int) -> list[Path]:
    """Remove all but the newest ``keep_last`` iteration directories (never ``keep``)."""
    iters = sorted(p for p in save_dir.glob("iter_*") if p.is_dir() and p.name[5:].isdigit())
    doomed = [p for p in iters[:-keep_last] if int(p.name[5:]) != keep]
    for p in doomed:
        shutil.rmtree(p)
    return doomed
