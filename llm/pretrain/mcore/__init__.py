"""The ``mcore`` engine: npubox's own training loop on megatron-core's GPTModel (CPU, CUDA).

One concept per file: ``data`` (GPTDataset over our indexed data, micro-batches per data-parallel rank),
``schedule`` (warmup + cosine LR), ``training_state`` (save/resume a run in Megatron's layout) and ``train`` (the
loop). Under ``llm launch`` every worker runs this loop; importing the package does not import torch.
"""

from __future__ import annotations

STARTS_ITS_OWN_WORKERS = False  # `llm launch` starts one worker per device, each running main


def main(argv: list[str], launch_ns=None) -> int:
    from llm.pretrain.mcore.train import main as train_main

    return train_main(argv)
