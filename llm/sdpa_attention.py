"""Core attention for megatron-core's local layer spec on ``torch.nn.functional.scaled_dot_product_attention``.

megatron-core's local spec (``get_gpt_layer_local_spec``) computes attention with its unfused
``DotProductAttention``: the whole [b, heads, s, s] score matrix is materialised, masked and
soft-maxed in memory. :class:`SdpaAttention` is that module with only its forward replaced by one
call of torch's SDPA, which picks a fused kernel (FlashAttention on CUDA in bf16/fp16). It is
built from the same arguments and has the same (empty) state dict, so checkpoints, the
``llm convert`` layout and the state-dict keys do not depend on which attention trained them.

    spec = with_core_attention(get_gpt_layer_local_spec(normalization="RMSNorm"), "sdpa")

Import this module only after :func:`llm.accel.detect` (it imports megatron.core).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

from llm.errors import NpuboxError

Attention = Literal["sdpa", "unfused"]
ATTENTIONS: tuple[Attention, ...] = ("sdpa", "unfused")

# SDPA takes enable_gqa (key/value heads shared by groups of query heads) from torch 2.5.
_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


class SdpaAttention(DotProductAttention):
    """megatron-core's ``DotProductAttention`` with its forward on SDPA.

    Construction is the parent's, whatever megatron-core version is installed (its arguments
    differ between releases: ``softmax_scale``, ``cp_comm_type``, ``pg_collection``...), so the
    per-partition head counts, the softmax scale and the dropout module are the parent's too.
    Inputs are [s, b, heads, head_dim] (query) and [s, b, groups, head_dim] (key, value); the output
    is [s, b, heads * head_dim], as for the parent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.config, "softmax_type", "vanilla") != "vanilla" or getattr(self.config, "window_size", None):
            raise NpuboxError(
                "attention 'sdpa' computes the plain softmax over the causal window; this model's config asks for "
                f"softmax_type={getattr(self.config, 'softmax_type', None)!r}, window_size="
                f"{getattr(self.config, 'window_size', None)!r}: use attention 'unfused'"
            )
        # megatron-core >= 0.10 stores softmax_scale, older releases norm_factor = its inverse; both
        # fold apply_query_key_layer_scaling's 1/layer_number in, which the fused softmax multiplies back.
        scale = getattr(self, "softmax_scale", None) or 1.0 / self.norm_factor
        if self.config.apply_query_key_layer_scaling:
            scale *= self.layer_number
        self.sdpa_scale = scale

    def forward(
        self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None, packed_seq_params=None, **_
    ):
        if packed_seq_params is not None or attention_bias is not None:
            raise NpuboxError(
                "attention 'sdpa' takes no packed sequences and no attention bias; use attention 'unfused'"
            )
        sq, b = query.shape[0], query.shape[1]
        # [s, b, n, d] -> [b, n, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        if attention_mask is not None:  # megatron's boolean mask is True where attention is NOT allowed
            mask, causal = ~attention_mask, False
        else:  # the unfused path masks causally from its own mask type (the one it was built with)
            mask, causal = None, self.attn_mask_type == AttnMaskType.causal and sq > 1
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        gqa = {}
        if groups > 1:
            if _SDPA_HAS_GQA and mask is None:
                gqa = {"enable_gqa": True}
            else:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        p = self.attention_dropout.p if self.training else 0.0
        rng = contextlib.nullcontext()
        if p > 0.0 and not self.config.sequence_parallel:  # as the parent: TP ranks drop different heads
            rng = tensor_parallel.get_cuda_rng_tracker().fork()
        with rng:
            out = F.scaled_dot_product_attention(q, k, v, mask, p, causal, scale=self.sdpa_scale, **gqa)
        # [b, n, s, d] -> [s, b, n * d]
        return out.permute(2, 0, 1, 3).reshape(sq, b, self.hidden_size_per_partition)


def core_attention(attention: Attention) -> type:
    if attention == "sdpa":
        return SdpaAttention
    if attention == "unfused":
        return DotProductAttention
    raise NpuboxError(f"attention {attention!r}: expected one of {', '.join(ATTENTIONS)}")


def with_core_attention(layer_spec, attention: Attention):
    """``layer_spec`` (a fresh one from ``get_gpt_layer_local_spec``) with its self-attention's core
    attention set to ``attention``; every other submodule, and so every state-dict key, unchanged."""
    layer_spec.submodules.self_attention.submodules.core_attention = core_attention(attention)
    return layer_spec
