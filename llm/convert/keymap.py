"""The tensors of a model family, by a neutral *canonical* name, and where each lives in a HF checkpoint.

Canonical tensors are whole (not TP-split) and unpadded, in HF orientation ([out, in]):

    embed                 [vocab, hidden]
    layers.N.ln1          [hidden]                       input RMSNorm
    layers.N.q / k / v    [heads*d | groups*d, hidden]   (+ q_bias / k_bias / v_bias when add_qkv_bias)
    layers.N.o            [hidden, heads*d]
    layers.N.ln2          [hidden]                       pre-MLP RMSNorm
    layers.N.gate / up    [ffn, hidden]                  SwiGLU: down(silu(gate(x)) * up(x))
    layers.N.down         [hidden, ffn]
    final_ln              [hidden]
    lm_head               [vocab, hidden]                absent when embeddings are tied

HF side: qwen2 and llama use Llama's names; Qwen v1 fuses q, k, v into ``attn.c_attn`` (rows
[q; k; v]) and computes ``c_proj(w1(x) * silu(w2(x)))``, so its gate is ``w2`` and its up ``w1``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HfLocation:
    key: str  # HF tensor name
    row_offset: int = 0  # the canonical tensor is rows [row_offset, row_offset + rows) of it


LLAMA_LAYER = {
    "ln1": "input_layernorm.weight",
    "q": "self_attn.q_proj.weight",
    "k": "self_attn.k_proj.weight",
    "v": "self_attn.v_proj.weight",
    "q_bias": "self_attn.q_proj.bias",
    "k_bias": "self_attn.k_proj.bias",
    "v_bias": "self_attn.v_proj.bias",
    "o": "self_attn.o_proj.weight",
    "ln2": "post_attention_layernorm.weight",
    "gate": "mlp.gate_proj.weight",
    "up": "mlp.up_proj.weight",
    "down": "mlp.down_proj.weight",
}
LLAMA_GLOBAL = {"embed": "model.embed_tokens.weight", "final_ln": "model.norm.weight", "lm_head": "lm_head.weight"}

QWEN_LAYER = {
    "ln1": "ln_1.weight",
    "o": "attn.c_proj.weight",
    "ln2": "ln_2.weight",
    "gate": "mlp.w2.weight",
    "up": "mlp.w1.weight",
    "down": "mlp.c_proj.weight",
}
QWEN_GLOBAL = {"embed": "transformer.wte.weight", "final_ln": "transformer.ln_f.weight", "lm_head": "lm_head.weight"}

# HF tensors that a checkpoint may hold and a conversion ignores (old rotary caches).
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def layer_tensor_names(recipe) -> list[str]:
    names = ["ln1", "q", "k", "v"]
    if recipe.architecture.add_qkv_bias:
        names += ["q_bias", "k_bias", "v_bias"]
    return names + ["o", "ln2", "gate", "up", "down"]


def canonical_names(recipe) -> list[str]:
    """Every canonical tensor of the model, embedding first, in layer order."""
    names = ["embed"]
    for i in range(recipe.architecture.num_layers):
        names += [f"layers.{i}.{t}" for t in layer_tensor_names(recipe)]
    names.append("final_ln")
    if not recipe.architecture.tie_embeddings:
        names.append("lm_head")
    return names


def canonical_shape(recipe, name: str) -> tuple[int, ...]:
    a = recipe.architecture
    h, d, f = a.hidden_size, a.head_dim, a.ffn_hidden_size
    q_rows, kv_rows = a.num_attention_heads * d, a.num_query_groups * d
    shapes = {
        "embed": (a.vocab_size, h),
        "lm_head": (a.vocab_size, h),
        "final_ln": (h,),
        "ln1": (h,),
        "ln2": (h,),
        "q": (q_rows, h),
        "k": (kv_rows, h),
        "v": (kv_rows, h),
        "q_bias": (q_rows,),
        "k_bias": (kv_rows,),
        "v_bias": (kv_rows,),
        "o": (h, q_rows),
        "gate": (f, h),
        "up": (f, h),
        "down": (h, f),
    }
    return shapes[name.rsplit(".", 1)[-1]]


def hf_location(recipe, name: str) -> HfLocation:
    """Where canonical tensor ``name`` lives in the family's HF checkpoint."""
    if not name.startswith("layers."):
        return HfLocation((QWEN_GLOBAL if recipe.family == "qwen" else LLAMA_GLOBAL)[name])
    _, layer, tensor = name.split(".")
    if recipe.family != "qwen":
        return HfLocation(f"model.layers.{layer}.{LLAMA_LAYER[tensor]}")
    prefix = f"transformer.h.{layer}."
    if tensor in QWEN_LAYER:
        return HfLocation(prefix + QWEN_LAYER[tensor])
    # q, k, v (and their biases) are the three equal row blocks of c_attn (Qwen v1 has no GQA).
    part, _, bias = tensor.partition("_")
    hidden = recipe.architecture.num_attention_heads * recipe.architecture.head_dim
    suffix = "bias" if bias else "weight"
    return HfLocation(prefix + f"attn.c_attn.{suffix}", "qkv".index(part) * hidden)


def hf_tensors(recipe) -> list[tuple[str, list[str]]]:
    """The HF checkpoint's tensors in write order: (HF key, the canonical names stacked by rows in it)."""
    out: list[tuple[str, list[str]]] = []
    for name in canonical_names(recipe):
        key = hf_location(recipe, name).key
        if out and out[-1][0] == key:
            out[-1][1].append(name)
        else:
            out.append((key, [name]))
    return out


def hf_shape(recipe, parts: list[str]) -> tuple[int, ...]:
    shapes = [canonical_shape(recipe, p) for p in parts]
    return (sum(s[0] for s in shapes), *shapes[0][1:])
