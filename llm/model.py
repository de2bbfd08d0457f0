"""megatron-core GPTModel from a Recipe, and the process groups it runs in.

    accel = llm.accel.detect()                      # first: may patch megatron (NPU)
    dist = init_distributed(tp=2, pp=1, accel=accel)  # torch.distributed + parallel_state
    model = build_gpt_model(recipe, tp=2, pp=1)     # this rank's piece (TP shard, PP stage)
    ...
    destroy_distributed()

The model uses megatron-core's *local* layer spec (no Transformer Engine), so its state-dict keys
are the ones DESIGN.md names (``decoder.layers.N.self_attention.linear_qkv.weight``, ...) and the
same on NPU, CUDA and CPU. Layer numbers in a PP stage's state dict are local to that stage
(``decoder.layers.0`` is the stage's first layer), as Megatron saves them.

Heavy imports (torch, megatron) happen inside the functions.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from llm.errors import NpuboxError

if TYPE_CHECKING:
    import torch
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer import TransformerConfig

    from llm.accel import Accelerator
    from llm.recipes import Recipe

# Seed 004's MindSpeed-LLM script for Qwen2.5 uses --init-method-std 0.01.
DEFAULT_INIT_METHOD_STD = 0.01


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits. ``dp = world_size // (tp * pp)``."""

    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    dp: int
    tp_rank: int
    pp_rank: int
    dp_rank: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(tp: int = 1, pp: int = 1, accel: "Accelerator | None" = None, timeout_s: int = 600) -> DistInfo:
    """Start torch.distributed (from torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* variables, or
    a single local process when they are absent) and megatron's TP/PP/DP groups.

    ``timeout_s`` bounds every collective; a lost peer is noticed sooner by :mod:`llm.heartbeat`,
    which makes this process exit naming the lost ranks."""
    import torch.distributed as torch_dist
    from megatron.core import parallel_state

    from llm import accel as accel_mod, heartbeat

    accel = accel or accel_mod.detect()
    if "RANK" not in os.environ:  # a plain `python -m llm pretrain`: world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world % (tp * pp):
        raise NpuboxError(
            f"world size {world} is not a multiple of tp × pp = {tp} × {pp}; "
            f"launch a multiple of {tp * pp} processes or change --tp/--pp"
        )
    accel.set_device(local_rank)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend=accel.backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
    heartbeat.start_heartbeat(rank, world)  # names a lost node's ranks within a minute
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp,
            pipeline_model_parallel_size=pp,
            distributed_timeout_minutes=max(1, timeout_s // 60),
        )
    return DistInfo(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        tp=tp,
        pp=pp,
        dp=world // (tp * pp),
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        pp_rank=parallel_state.get_pipeline_model_parallel_rank(),
        dp_rank=parallel_state.get_data_parallel_rank(),
    )


def destroy_distributed() -> None:
    import torch.distributed as torch_dist
    from megatron.core import parallel_state

    from llm import heartbeat

    heartbeat.stop_heartbeat()
    parallel_state.destroy_model_parallel()
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def transformer_config(
    recipe: "Recipe",
    tp: int = 1,
    pp: int = 1,
    dtype: "torch.dtype | None" = None,
    accel: "Accelerator | None" = None,
    init_method_std: float = DEFAULT_INIT_METHOD_STD,
) -> "TransformerConfig":
    """The TransformerConfig of a Qwen2/Llama-style decoder: RMSNorm, SwiGLU, RoPE, GQA, bias only
    on QKV (when the recipe says so), no dropout, no fused kernels (portable across devices)."""
    import torch
    import torch.nn.functional as F
    from megatron.core.transformer import TransformerConfig

    from llm import accel as accel_mod

    a = recipe.architecture
    dtype = dtype or torch.float32
    accel = accel or accel_mod.detect()
    if a.num_query_groups % tp:
        raise NpuboxError(
            f"recipe {recipe.name}: num_query_groups ({a.num_query_groups}) is not divisible by --tp {tp}; "
            "each tensor-parallel rank must hold whole query groups"
        )
    if a.num_layers % pp:
        raise NpuboxError(f"recipe {recipe.name}: num_layers ({a.num_layers}) is not divisible by --pp {pp}")
    if a.ffn_hidden_size % tp:
        raise NpuboxError(f"recipe {recipe.name}: ffn_hidden_size ({a.ffn_hidden_size}) is not divisible by --tp {tp}")
    return TransformerConfig(
        num_layers=a.num_layers,
        hidden_size=a.hidden_size,
        ffn_hidden_size=a.ffn_hidden_size,
        num_attention_heads=a.num_attention_heads,
        num_query_groups=a.num_query_groups,
        kv_channels=a.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=a.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=a.add_qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=init_method_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=False,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=accel.kind == "cpu",
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False,
        attention_softmax_in_fp32=True,
    )


def build_gpt_model(
    recipe: "Recipe",
    tp: int = 1,
    pp: int = 1,
    pre_process: bool | None = None,
    post_process: bool | None = None,
    dtype: "torch.dtype | None" = None,
    seq_length: int | None = None,
    accel: "Accelerator | None" = None,
    init_method_std: float = DEFAULT_INIT_METHOD_STD,
    attention: str | None = None,
    fusions: tuple[str, ...] = (),
) -> "GPTModel":
    """This rank's megatron-core GPTModel (local spec) for ``recipe`` split ``tp`` × ``pp``.

    Requires :func:`init_distributed` (megatron's layers read the TP/PP groups). ``pre_process`` /
    ``post_process`` default to whether this rank is the first / last pipeline stage. The vocab is
    padded to ``recipe.architecture.padded_vocab_size(tp)``. Parameters are on the accelerator
    (CPU: on CPU), all in ``dtype`` (default float32). ``attention`` is the core attention,
    ``"sdpa"`` or megatron's ``"unfused"`` (:mod:`llm.sdpa_attention`; default: the accelerator's);
    ``fusions`` the kernel fusions of :mod:`llm.fusions` that the TransformerConfig turns on."""
    import dataclasses

    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    from llm import accel as accel_mod
    from llm.fusions import config_overrides
    from llm.compat import gpt_local_layer_spec
    from llm.sdpa_attention import with_core_attention

    accel = accel or accel_mod.detect()
    a = recipe.architecture
    config = transformer_config(recipe, tp, pp, dtype, accel, init_method_std)
    if fusions:
        config = dataclasses.replace(config, **config_overrides(fusions, config.bf16))
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage()
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage()
    spec = with_core_attention(gpt_local_layer_spec(), attention or accel.attention)
    model = GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=a.padded_vocab_size(tp),
        max_sequence_length=seq_length or a.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=a.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=int(a.rotary_base),
        parallel_output=True,
    )
    # The local spec's RMSNorm (torch.nn.RMSNorm) ignores params_dtype: cast it as Megatron-LM's Float16Module
    # does. megatron-core's distributed optimizer assumes one dtype per param group when it maps checkpoint shards.
    return model.to(config.params_dtype)
