"""Training samples: megatron-core's GPTDataset over our indexed data, cut into micro-batches.

GPTDataset (built by BlendedMegatronDatasetBuilder) turns the documents of ``PREFIX.bin/.idx`` into
shuffled ``seq_length + 1``-token samples, with the same seed on every rank. Sample ``i`` of the
run is the same whatever the parallel layout: global step ``s`` takes samples
``[s*GBS, (s+1)*GBS)``, cut into chunks of ``MBS × DP``; data-parallel rank ``r`` takes
``[r*MBS, (r+1)*MBS)`` of each chunk (Megatron's pretraining sampler). That is what makes runs
with different TP/PP/DP comparable, and a resume at step ``s`` exact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from llm.pretrain.config import PretrainConfig


def build_train_dataset(cfg: PretrainConfig, vocab_size: int):
    """The GPTDataset of ``cfg.train_iters × cfg.global_batch_size`` samples (index cache built on
    rank 0 beside the data, in ``<data dir>/cache``, and read by the others). The samples are
    already token ids: Megatron's null tokenizer only says where documents end (llm.compat)."""
    from llm.compat import build_gpt_dataset

    cache = os.path.join(os.path.dirname(os.path.abspath(cfg.data_path)), "cache")
    return build_gpt_dataset(
        cfg.data_path, cfg.seq_length, cfg.train_iters * cfg.global_batch_size, cfg.seed, cache, vocab_size
    )


def sample_indices(cfg: PretrainConfig, dp: int, dp_rank: int, step: int, microbatch: int) -> range:
    """Which dataset samples micro-batch ``microbatch`` of global step ``step`` (0-based) holds on
    data-parallel rank ``dp_rank``."""
    mbs = cfg.micro_batch_size
    first = step * cfg.global_batch_size + microbatch * mbs * dp + dp_rank * mbs
    return range(first, first + mbs)


def micro_batches(dataset, cfg: PretrainConfig, dp: int, dp_rank: int, start_step: int) -> Iterator[dict]:
    """Every micro-batch this rank trains on, from global step ``start_step`` to the end, in order.
    Each is a dict of ``tokens``, ``labels``, ``loss_mask``, ``position_ids`` tensors ``[MBS, S]``."""
    from torch.utils.data import default_collate

    for step in range(start_step, cfg.train_iters):
        for m in range(cfg.num_microbatches(dp)):
            yield default_collate([dataset[i] for i in sample_indices(cfg, dp, dp_rank, step, m)])
