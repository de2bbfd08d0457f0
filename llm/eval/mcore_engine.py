"""The megatron-core engine: a Megatron checkpoint (written by `python -m llm convert` or
`pretrain`) loaded into llm.model's GPTModel, split TP ways as saved.

A checkpoint split TP ways runs in TP processes (`python -m llm launch --nproc TP eval
--load DIR ...`; gloo on CPU). Every rank scores the same batches; rank 0 prints and writes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm.errors import NpuboxError


def check_tensor_shapes(path: Path, found: dict[str, Any], wanted: dict[str, Any], what: str) -> None:
    """Refuse a rank file whose tensors have other shapes than the model built for them (torch's load_state_dict
    would raise a page of size mismatches): the first one named, with both shapes."""
    wrong = [
        (key, list(value.shape), list(wanted[key].shape))
        for key, value in found.items()
        if key in wanted and hasattr(value, "shape") and tuple(value.shape) != tuple(wanted[key].shape)
    ]
    if wrong:
        key, have, want = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise NpuboxError(f"{path}: tensor {key!r} has shape {have}, {what} expects {want}{more}")


class MegatronEngine:
    def __init__(self, load_dir: Path | str, model: str | None = None, dtype: str = "float32"):
        from llm import accel as accel_mod

        accel = accel_mod.detect()  # before any megatron import (NPU: MindSpeed patches megatron)
        import torch

        from llm import checkpoint, distributed
        from llm import model as model_mod
        from llm.recipes import load_recipe

        self.torch = torch
        self.load_dir = Path(load_dir)
        self.iteration = checkpoint.read_latest(self.load_dir)
        tp, pp = checkpoint.find_layout(self.load_dir, self.iteration)
        if pp != 1:
            raise NpuboxError(
                f"--load {self.load_dir}: checkpoint has pp={pp}; eval runs pp=1 checkpoints "
                "(convert it with `python -m llm convert` to --pp 1)"
            )
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != tp:
            raise NpuboxError(
                f"--load {self.load_dir}: checkpoint is split tp={tp} but {world} process(es) run; "
                f"start eval with `python -m llm launch --nproc {tp} eval ...`"
            )
        self.dist = distributed.init_distributed(tp=tp, pp=1, accel=accel)
        accel.model_parallel_seed(1234)  # megatron's layers fork its RNG tracker even without dropout
        state = checkpoint.load_rank(self.load_dir, self.iteration, self.dist.tp_rank, 0, 1)
        name = model or getattr(state.get("args"), "npubox_model", None)
        if not name:
            raise NpuboxError(f"--load {self.load_dir}: its args do not name the model; pass --model <recipe>")
        self.recipe = load_recipe(name)
        checkpoint.check_args_fit(self.load_dir, state.get("args"), self.recipe)  # as convert checks it
        self.tp = tp
        self.device = accel.device(self.dist.local_rank)
        self.net = model_mod.build_gpt_model(self.recipe, tp=tp, pp=1, dtype=getattr(torch, dtype), accel=accel)
        path = checkpoint.rank_file(self.load_dir, self.iteration, self.dist.tp_rank, 0, 1)
        check_tensor_shapes(path, state["model"], self.net.state_dict(), f"recipe {name} at tp={tp}")
        missing, unexpected = self.net.load_state_dict(state["model"], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        unexpected = [k for k in unexpected if not k.endswith("_extra_state")]
        if missing or unexpected:
            raise NpuboxError(
                f"--load {self.load_dir}: weights do not fit recipe {name} at tp={tp} "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        self.net.eval()
        self.max_length = self.recipe.architecture.max_position_embeddings
        self.vocab_size = self.recipe.architecture.vocab_size  # padded rows past it are not tokens
        self.is_main = self.dist.rank == 0

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "megatron-core",
            "load": str(self.load_dir),
            "iteration": self.iteration,
            "tp": self.tp,
            "recipe": self.recipe.name,
        }

    def score_next_token(
        self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        import torch.distributed as torch_dist
        from megatron.core import parallel_state

        torch = self.torch
        lengths = torch.tensor([len(p) for p in prompts])
        ids = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p)
        position_ids = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        with torch.inference_mode():
            # Right padding with the causal mask alone: no real position attends to a pad.
            logits = self.net(ids.to(self.device), position_ids.to(self.device), attention_mask=None)
            last = logits[torch.arange(len(prompts)), (lengths - 1).to(logits.device)].float().contiguous()
            if self.tp > 1:  # the output layer is split over the vocab: gather the last positions only
                shards = [torch.empty_like(last) for _ in range(self.tp)]
                torch_dist.all_gather(shards, last, group=parallel_state.get_tensor_model_parallel_group())
                last = torch.cat(shards, dim=-1)
            logprobs = last[:, : self.vocab_size].log_softmax(-1).cpu()
        return [logprobs[i, list(c)].tolist() for i, c in enumerate(candidates)]

    def close(self) -> None:
        from llm.distributed import destroy_distributed

        destroy_distributed()
