"""The training loop: megatron-core's GPTModel, DDP, optimizer and pipeline schedules.

Read top to bottom: flags → device and process groups → model (+ weights from --load) → DDP and
optimizer → LR schedule (+ optimizer/RNG state on resume) → data → steps → checkpoints.
"""

from __future__ import annotations

import os
import time
import warnings
from functools import partial

from llm import heartbeat
from llm.accel import Accelerator, detect
from llm.errors import NpuboxError
from llm.pretrain.config import PretrainConfig, parse_config
from llm.pretrain.mcore import training_state
from llm.pretrain.mcore.stop_signal import StopSignal, Terminated
from llm.target_lock import save_lock


def main(argv: list[str]) -> int:
    cfg = parse_config(argv)
    accel = detect()  # before any megatron import: on NPU, MindSpeed patches megatron
    warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
    from llm.distributed import destroy_distributed, init_distributed

    # rank 0 holds --save before any process group exists; torchrun ends a refused run's other workers
    with save_lock(cfg.save, int(os.environ.get("RANK", "0")) == 0):
        dist = init_distributed(cfg.tp, cfg.pp, accel)
        try:
            train(cfg, accel, dist)
        except Terminated:
            return Terminated.EXIT_CODE
        except NpuboxError:
            raise
        except Exception:  # a collective failed: a lost peer? then the watchdog exits naming its ranks
            heartbeat.explain_failure()
            raise
        finally:
            destroy_distributed()
    return 0


def loss_func(loss_mask, output_tensor):
    """Mean next-token cross entropy over the micro-batch's unmasked tokens."""
    losses = output_tensor.float().view(-1)
    mask = loss_mask.float().view(-1)
    loss = (losses * mask).sum() / mask.sum()
    # clone: the schedule divides the returned loss in place by the number of micro-batches.
    return loss, {"lm loss": loss.detach().clone()}


def forward_step(data_iterator, model):
    batch = next(data_iterator)
    device = next(model.parameters()).device
    tokens = batch["tokens"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    position_ids = batch["position_ids"].to(device, non_blocking=True)
    loss_mask = batch["loss_mask"].to(device, non_blocking=True)
    output = model(tokens, position_ids, None, labels=labels)  # per-token losses on the last stage
    return output, partial(loss_func, loss_mask)


def mean_loss(losses: list[dict], device) -> float:
    """The step's loss: mean over micro-batches and data-parallel ranks (only last-stage ranks have
    losses; tensor-parallel ranks hold equal copies, which leaves the mean unchanged)."""
    import torch
    import torch.distributed as torch_dist

    total = torch.zeros(2, dtype=torch.float64, device=device)
    for d in losses:
        total[0] += d["lm loss"].double()
        total[1] += 1
    torch_dist.all_reduce(total)
    return (total[0] / total[1]).item()


def train(cfg: PretrainConfig, accel: Accelerator, dist) -> None:
    import torch
    import torch.distributed as torch_dist
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from llm.fusions import set_fused_adam
    from llm.model import build_gpt_model
    from llm.pretrain.mcore.data import build_train_dataset, micro_batches
    from llm.pretrain.mcore.schedule import build_lr_scheduler
    from llm.pretrain.metrics import MetricsLog, flops_per_step, step_metrics
    from llm.recipes import load_recipe

    dp = cfg.check(dist.world_size)
    recipe = load_recipe(cfg.model)
    accel.model_parallel_seed(cfg.seed)
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    device = accel.device(dist.local_rank)

    # Model: random init, then the weights of --load (converted or pretrained).
    model = build_gpt_model(
        recipe,
        cfg.tp,
        cfg.pp,
        dtype=dtype,
        seq_length=cfg.seq_length,
        accel=accel,
        init_method_std=cfg.init_method_std,
        attention=cfg.attention,
        fusions=cfg.fusions,
    )
    loaded = training_state.read(cfg.load, cfg, dist) if cfg.load else None
    if loaded is not None:
        training_state.load_model(loaded, model)
    if "compile" in cfg.fusions:
        model.compile()  # in place: parameters and state-dict keys stay the module's own

    # DDP (gradient buffers, all-reduce or reduce-scatter over data-parallel ranks) and optimizer.
    use_dist_opt = cfg.distributed_optimizer
    ddp = DistributedDataParallel(
        model.config,
        DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=use_dist_opt
        ),
        model,
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=cfg.lr,
            min_lr=cfg.min_lr,
            weight_decay=cfg.weight_decay,
            adam_beta1=cfg.adam_beta1,
            adam_beta2=cfg.adam_beta2,
            clip_grad=cfg.clip_grad,
            bf16=cfg.bf16,
            params_dtype=dtype,
            use_distributed_optimizer=use_dist_opt,
        ),
        [ddp],
    )
    # What the schedule calls around the micro-batches: reduce gradients over data-parallel ranks
    # (and the shared embedding over pipeline stages) once per step, and scale the loss (bf16).
    model.config.finalize_model_grads_func = finalize_model_grads
    model.config.grad_scale_func = optimizer.scale_loss
    model.config.no_sync_func = ddp.no_sync
    scheduler = build_lr_scheduler(optimizer, cfg)
    start, consumed = 0, 0
    if loaded is not None and loaded.resumable:
        start, consumed = training_state.restore_training_state(loaded, optimizer, scheduler, accel, use_dist_opt)
    set_fused_adam(optimizer, "adam" in cfg.fusions)
    del loaded  # the rank file's tensors are no longer needed

    # Data: this rank's micro-batches from the step after the checkpoint.
    dataset = build_train_dataset(cfg, recipe.architecture.vocab_size)
    batches = micro_batches(dataset, cfg, dp, dist.dp_rank, start)
    num_microbatches = cfg.num_microbatches(dp)
    forward_backward = get_forward_backward_func()

    flops = flops_per_step(recipe, cfg.seq_length, cfg.global_batch_size, cfg.tp)
    tokens_per_step = cfg.global_batch_size * cfg.seq_length
    log = None
    if dist.rank == 0:
        log = MetricsLog(cfg.metrics_path, cfg.train_iters, start, cfg.log_interval, cfg.progress)
        log.print(
            f"pretrain {cfg.model}: {accel.kind} ({accel.backend}) world {dist.world_size} = tp {cfg.tp} × pp {cfg.pp} "
            f"× dp {dp}; attention {cfg.attention or accel.attention}, fusions {','.join(cfg.fusions) or 'none'}; "
            f"{num_microbatches} micro-batches of {cfg.micro_batch_size} × {cfg.seq_length} tokens per step; "
            f"{'resuming at step ' + str(start) if start else 'starting'} from {cfg.load or 'random init'}"
        )

    try:
        with StopSignal() as signalled:
            for iteration in range(start + 1, cfg.train_iters + 1):
                t0 = time.perf_counter()
                ddp.zero_grad_buffer()
                optimizer.zero_grad()
                losses = forward_backward(
                    forward_step_func=forward_step,
                    data_iterator=batches,
                    model=[ddp],
                    num_microbatches=num_microbatches,
                    seq_length=cfg.seq_length,
                    micro_batch_size=cfg.micro_batch_size,
                    forward_only=False,
                )
                lr = optimizer.param_groups[0]["lr"]  # the rate this step applies
                _ok, grad_norm, _zeros = optimizer.step()
                scheduler.step(increment=1)
                consumed += cfg.global_batch_size
                loss = mean_loss(losses, device)
                accel.synchronize()
                step_time = time.perf_counter() - t0
                if log is not None:
                    log.log(
                        step_metrics(
                            iteration,
                            loss,
                            lr,
                            grad_norm,
                            step_time,
                            tokens_per_step,
                            flops,
                            dist.world_size,
                            accel.peak_tflops,
                            consumed,
                        )
                    )

                stop = cfg.exit_interval is not None and iteration % cfg.exit_interval == 0
                terminated = signalled.agreed(device)  # all ranks: any of them sent SIGTERM?
                if cfg.save and (
                    iteration % cfg.save_interval == 0 or iteration == cfg.train_iters or stop or terminated
                ):
                    training_state.save(
                        cfg, recipe, dist, accel, model, optimizer, scheduler, iteration, consumed, use_dist_opt
                    )
                    if log is not None:
                        log.print(f"saved iteration {iteration} to {cfg.save}")
                if stop:
                    if log is not None:
                        log.print(f"stopping at iteration {iteration} (--exit-interval {cfg.exit_interval})")
                    break
                if terminated:
                    if log is not None:
                        kept = f"iteration {iteration} is saved in {cfg.save}" if cfg.save else "no --save: none kept"
                        log.print(f"stopping at iteration {iteration}: SIGTERM received; {kept}")
                    raise Terminated(iteration)
    finally:
        if log is not None:
            log.close()
    torch_dist.barrier()
