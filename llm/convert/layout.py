"""How megatron-core's local spec lays out one TP rank's tensors (DESIGN.md, "convert").

* QKV is packed per query group: for group 0 its q rows (heads/groups heads × d), then its k
  rows (d), then its v rows (d); then group 1, ... Each TP rank holds whole groups.
* ``linear_fc1`` of a rank is [gate rows of the rank; up rows of the rank] (each split by TP first).
* ``linear_proj`` and ``linear_fc2`` are split by columns (their input dimension).
* Embedding and output rows are padded with zeros to ``padded_vocab_size(tp)``, then split by rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def tp_range(total: int, tp: int, rank: int) -> slice:
    """The rows (or columns) of a dimension of size ``total`` that TP rank ``rank`` of ``tp`` holds."""
    step = total // tp
    return slice(rank * step, (rank + 1) * step)


def unpack_qkv(qkv: "torch.Tensor", groups: int, heads_per_group: int, head_dim: int):
    """(q, k, v) rows of all ``groups`` query groups of a packed ``linear_qkv`` weight or bias."""
    rest = qkv.shape[1:]
    per_group = qkv.reshape(groups, (heads_per_group + 2) * head_dim, *rest)
    q_rows = heads_per_group * head_dim
    q = per_group[:, :q_rows].reshape(-1, *rest)
    k = per_group[:, q_rows : q_rows + head_dim].reshape(-1, *rest)
    v = per_group[:, q_rows + head_dim :].reshape(-1, *rest)
    return q, k, v
