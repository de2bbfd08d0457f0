"""A recipe's architecture ⇄ a Hugging Face ``config.json``, per model family. Light: no torch.

qwen   Qwen v1 (QWenLMHeadModel, remote code): intermediate_size is twice the SwiGLU width
       (w1 and w2 each hold half), kv_channels, rotary_emb_base, layer_norm_epsilon; c_attn
       always has a bias and there is no GQA.
qwen2  Qwen1.5 / Qwen2 / Qwen2.5 (Qwen2ForCausalLM): q/k/v always have a bias.
llama  Llama / Aquila2 (LlamaForCausalLM, AquilaForCausalLM): attention_bias names the qkv bias.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm.errors import NpuboxError


def read_hf_config(path: Path) -> dict:
    """A HF `config.json` (or the folder holding it) as a dict, or one clear sentence."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NpuboxError(f"{path}: file not found; expected a Hugging Face config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NpuboxError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise NpuboxError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


# The recipe fields a config.json determines, in the order disagreements are reported.
CHECKED_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "kv_channels",
    "vocab_size",
    "max_position_embeddings",
    "rotary_base",
    "norm_epsilon",
    "add_qkv_bias",
    "tie_embeddings",
)


def _rope_theta(cfg: dict[str, Any], default: float) -> float:
    # transformers 5 writes rope_parameters: {"rope_theta": ...}; older files have rope_theta.
    params = cfg.get("rope_parameters") or {}
    return float(cfg.get("rope_theta", params.get("rope_theta", default)))


def architecture_from_hf_config(family: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The recipe architecture fields that ``cfg`` (a parsed config.json) describes."""
    try:
        if family == "qwen":
            heads = cfg["num_attention_heads"]
            return dict(
                num_layers=cfg["num_hidden_layers"],
                hidden_size=cfg["hidden_size"],
                ffn_hidden_size=cfg["intermediate_size"] // 2,
                num_attention_heads=heads,
                num_query_groups=heads,
                kv_channels=cfg.get("kv_channels", cfg["hidden_size"] // heads),
                vocab_size=cfg["vocab_size"],
                max_position_embeddings=cfg["max_position_embeddings"],
                rotary_base=float(cfg.get("rotary_emb_base", 10000.0)),
                norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-6)),
                add_qkv_bias=True,
                tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            )
        heads = cfg["num_attention_heads"]
        return dict(
            num_layers=cfg["num_hidden_layers"],
            hidden_size=cfg["hidden_size"],
            ffn_hidden_size=cfg["intermediate_size"],
            num_attention_heads=heads,
            num_query_groups=cfg.get("num_key_value_heads") or heads,
            kv_channels=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            vocab_size=cfg["vocab_size"],
            max_position_embeddings=cfg["max_position_embeddings"],
            rotary_base=_rope_theta(cfg, 10000.0),
            norm_epsilon=float(cfg.get("rms_norm_eps", 1e-6)),
            add_qkv_bias=True if family == "qwen2" else bool(cfg.get("attention_bias", False)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
    except KeyError as e:
        raise NpuboxError(f"config.json has no field {e.args[0]!r}, which a {family} model's config needs") from None


def disagreements(recipe, cfg: dict[str, Any]) -> list[str]:
    """Every way ``cfg`` disagrees with ``recipe``, one sentence each (empty when they agree)."""
    problems = []
    archs = cfg.get("architectures") or []
    if archs and archs[0] != recipe.hf_architecture:
        problems.append(f"architectures is {archs!r}, recipe {recipe.name} expects [{recipe.hf_architecture!r}]")
    want = recipe.architecture.model_dump()
    want["kv_channels"] = recipe.architecture.head_dim
    have = architecture_from_hf_config(recipe.family, cfg)
    for field in CHECKED_FIELDS:
        if have[field] != want[field]:
            problems.append(f"{field}: config.json gives {have[field]!r}, recipe {recipe.name} has {want[field]!r}")
    return problems


def hf_config(recipe, dtype: str = "float32") -> dict[str, Any]:
    """A config.json for ``recipe`` that transformers (qwen2, llama) or Qwen v1's remote code reads."""
    a = recipe.architecture
    if recipe.family == "qwen":
        return {
            "architectures": [recipe.hf_architecture],
            "auto_map": {
                "AutoConfig": "configuration_qwen.QWenConfig",
                "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
            },
            "model_type": "qwen",
            "hidden_size": a.hidden_size,
            "intermediate_size": 2 * a.ffn_hidden_size,
            "num_hidden_layers": a.num_layers,
            "num_attention_heads": a.num_attention_heads,
            "kv_channels": a.head_dim,
            "vocab_size": a.vocab_size,
            "max_position_embeddings": a.max_position_embeddings,
            "seq_length": a.max_position_embeddings,
            "rotary_emb_base": a.rotary_base,
            "rotary_pct": 1.0,
            "layer_norm_epsilon": a.norm_epsilon,
            "no_bias": True,
            "tie_word_embeddings": False,
            "torch_dtype": dtype,
        }
    cfg: dict[str, Any] = {
        "architectures": [recipe.hf_architecture],
        "model_type": {"qwen2": "qwen2", "llama": "llama"}[recipe.family],
        "hidden_act": "silu",
        "hidden_size": a.hidden_size,
        "intermediate_size": a.ffn_hidden_size,
        "num_hidden_layers": a.num_layers,
        "num_attention_heads": a.num_attention_heads,
        "num_key_value_heads": a.num_query_groups,
        "vocab_size": a.vocab_size,
        "max_position_embeddings": a.max_position_embeddings,
        "rope_theta": a.rotary_base,
        "rms_norm_eps": a.norm_epsilon,
        "tie_word_embeddings": a.tie_embeddings,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "use_cache": True,
        "torch_dtype": dtype,
    }
    if a.kv_channels and a.kv_channels != a.hidden_size // a.num_attention_heads:
        cfg["head_dim"] = a.kv_channels
    if recipe.family == "qwen2":
        cfg.update(use_sliding_window=False, sliding_window=None, max_window_layers=a.num_layers)
    else:
        cfg.update(attention_bias=a.add_qkv_bias, mlp_bias=False)
    return cfg
