"""Learning rate: linear warmup from 0 to --lr over --warmup steps, then cosine decay to --min-lr
at --train-iters (Megatron's --lr-decay-style cosine), with constant weight decay. This is
megatron-core's OptimizerParamScheduler, stepped once per optimizer step."""

from __future__ import annotations

from llm.pretrain.config import PretrainConfig


def build_lr_scheduler(optimizer, cfg: PretrainConfig):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        lr_warmup_steps=cfg.warmup,
        lr_decay_steps=cfg.train_iters,
        lr_decay_style="cosine",
        start_wd=cfg.weight_decay,
        end_wd=cfg.weight_decay,
        wd_incr_steps=cfg.train_iters,
        wd_incr_style="constant",
    )
