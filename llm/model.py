"""megatron-core GPTModel from a Recipe.

    accel = llm.accel.detect()                      # first: may patch megatron (NPU)
    dist = init_distributed(tp=2, pp=1, accel=accel)  # llm.distributed: torch.distributed + parallel_state
    model = build_gpt_model(recipe, tp=2, pp=1)     # this rank's piece (TP shard, PP stage)
    ...
    destroy_distributed()

The model uses megatron-core's *local* layer spec (no Transformer Engine), so its state-dict keys are those
of ``megatron.core.models.gpt.gpt_layer_specs.get_gpt_layer_local_spec``
(``decoder.layers.N.self_attention.linear_qkv.weight``, ...) and the same on NPU, CUDA and CPU. Layer numbers
in a PP stage's state dict are local to that stage (``decoder.layers.0`` is the stage's first layer), as
Megatron saves them.

Heavy imports (torch, megatron) happen inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm.errors import NpuboxError

if TYPE_CHECKING:
    import torch
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer import TransformerConfig

    from llm.accel import Accelerator
    from llm.recipes import Recipe

# MindSpeed-LLM 2.0.0 examples/mcore/qwen25/pretrain_qwen25_7b_32k_ptd.sh: --init-method-std 0.01
DEFAULT_INIT_METHOD_STD = 0.01


def transformer_config(
    recipe: Recipe,
    tp: int = 1,
    pp: int = 1,
    dtype: torch.dtype | None = None,
    accel: Accelerator | None = None,
    init_method_std: float = DEFAULT_INIT_METHOD_STD,
) -> TransformerConfig:
    """The TransformerConfig of a Qwen2/Llama-style decoder: RMSNorm, SwiGLU, RoPE, GQA, bias only
    on QKV (when the recipe says so), no dropout, no fused kernels (portable across devices)."""
    import torch
    import torch.nn.functional as F
    from megatron.core.transformer import TransformerConfig

    from llm import accel as accel_mod

    a = recipe.architecture
    dtype = dtype or torch.float32
    accel = accel or accel_mod.detect()
    recipe.check_tp(tp)
    if a.num_layers % pp:
        raise NpuboxError(f"recipe {recipe.name}: num_layers ({a.num_layers}) is not divisible by --pp {pp}")
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
    recipe: Recipe,
    tp: int = 1,
    pp: int = 1,
    pre_process: bool | None = None,
    post_process: bool | None = None,
    dtype: torch.dtype | None = None,
    seq_length: int | None = None,
    accel: Accelerator | None = None,
    init_method_std: float = DEFAULT_INIT_METHOD_STD,
    attention: str | None = None,
    fusions: tuple[str, ...] = (),
) -> GPTModel:
    """This rank's megatron-core GPTModel (local spec) for ``recipe`` split ``tp`` × ``pp``.

    Requires :func:`llm.distributed.init_distributed` (megatron's layers read the TP/PP groups). ``pre_process`` /
    ``post_process`` default to whether this rank is the first / last pipeline stage. The vocab is
    padded to ``recipe.architecture.padded_vocab_size(tp)``. Parameters are on the accelerator
    (CPU: on CPU), all in ``dtype`` (default float32). ``attention`` is the core attention,
    ``"sdpa"`` or megatron's ``"unfused"`` (:mod:`llm.sdpa_attention`; default: the accelerator's);
    ``fusions`` the kernel fusions of :mod:`llm.fusions` that the TransformerConfig turns on."""
    import dataclasses

    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    from llm import accel as accel_mod
    from llm.compat import gpt_local_layer_spec
    from llm.fusions import config_overrides
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
