"""`python -m llm pretrain`: train a megatron-core GPTModel on an indexed dataset.

One concept per file: ``config`` (flags and their defaults), ``data`` (GPTDataset over our indexed
data, micro-batches per data-parallel rank), ``schedule`` (warmup + cosine LR), ``metrics`` (log
line, JSONL, MFU, progress bar), ``checkpointing`` (save/resume in Megatron's layout) and ``train``
(the loop). Importing this package does not import torch.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from llm.pretrain.train import main as train_main

    return train_main(argv)
