"""What each step reports: a log line, a JSONL record and a progress bar with ETA (rank 0 only).

MFU uses Megatron's FLOPs count for a GPT step (``num_floating_point_operations`` in
Megatron-LM's training.py): 3 passes (forward + 2× backward) × 2 FLOPs per multiply-add ×

    per token, per layer:  h·(q + 2·kv)        QKV projection (GQA: kv = groups × head_dim)
                           q·s / 2 × 2          scores and weighted values, halved: causal mask
                           q·h                  output projection
                           3·h·ffn              SwiGLU MLP (gate, up, down)
    per token:             h·V_padded           logits

with q = heads × head_dim. Peak FLOP/s per device come from :mod:`llm.accel` (910B1–B4, H100,
H200); CPU reports no MFU.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from llm.recipes import Recipe


def flops_per_step(recipe: Recipe, seq_length: int, global_batch_size: int, tp: int = 1) -> float:
    a = recipe.architecture
    h, s, d = a.hidden_size, seq_length, a.head_dim
    q, kv = a.num_attention_heads * d, a.num_query_groups * d
    per_layer = h * (q + 2 * kv) + q * s + q * h + 3 * h * a.ffn_hidden_size
    per_token = a.num_layers * per_layer + h * a.padded_vocab_size(tp)
    return 3 * 2 * global_batch_size * s * per_token


@dataclass
class StepMetrics:
    iteration: int
    loss: float
    lr: float
    grad_norm: float | None
    step_time_s: float
    tokens_per_s_per_device: float
    mfu: float | None  # fraction of the devices' peak; None where the peak is unknown (CPU)
    consumed_samples: int


def step_metrics(
    iteration: int,
    loss: float,
    lr: float,
    grad_norm: float | None,
    step_time_s: float,
    tokens_per_step: int,
    flops: float,
    world_size: int,
    peak_tflops: float | None,
    consumed_samples: int,
) -> StepMetrics:
    mfu = None
    if peak_tflops:
        mfu = flops / (step_time_s * world_size * peak_tflops * 1e12)
    return StepMetrics(
        iteration=iteration,
        loss=loss,
        lr=lr,
        grad_norm=grad_norm,
        step_time_s=step_time_s,
        tokens_per_s_per_device=tokens_per_step / step_time_s / world_size,
        mfu=mfu,
        consumed_samples=consumed_samples,
    )


def format_line(m: StepMetrics, train_iters: int) -> str:
    grad = f"{m.grad_norm:.3f}" if m.grad_norm is not None else "-"
    mfu = f"{100 * m.mfu:.1f}%" if m.mfu is not None else "n/a"
    return (
        f"iter {m.iteration:>6}/{train_iters} | loss {m.loss:.6f} | lr {m.lr:.3e} | grad norm {grad} | "
        f"step {1000 * m.step_time_s:.1f} ms | {m.tokens_per_s_per_device:,.0f} tok/s/device | MFU {mfu}"
    )


class MetricsLog:
    """Rank 0's output: JSONL (every step, appended so a resumed run continues the file), a log
    line every ``log_interval`` steps, and a rich progress bar with ETA when ``progress``."""

    def __init__(self, path: str | None, train_iters: int, start_iteration: int, log_interval: int, progress: bool):
        self.train_iters = train_iters
        self.log_interval = log_interval
        self.file = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")
        self.progress = None
        if progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("pretrain"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self.task = self.progress.add_task("pretrain", total=train_iters, completed=start_iteration)
            self.progress.start()

    def print(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            print(text, flush=True)

    def log(self, m: StepMetrics) -> None:
        if self.file is not None:
            self.file.write(json.dumps(asdict(m)) + "\n")
            self.file.flush()
        if m.iteration % self.log_interval == 0 or m.iteration == self.train_iters:
            self.print(format_line(m, self.train_iters))
        if self.progress is not None:
            self.progress.update(self.task, completed=m.iteration)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.file is not None:
            self.file.close()
