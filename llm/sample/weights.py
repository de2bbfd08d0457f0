"""Deterministic random HF weights for a recipe: ``config.json`` + ``model.safetensors`` in fp32.

qwen2 and llama recipes go through transformers (``Qwen2ForCausalLM`` / ``LlamaForCausalLM``
built from the recipe's config, so transformers itself accepts the names and shapes); Qwen v1
has no transformers class, so its HF key layout (fused ``c_attn``, ``w1``/``w2``) is written
directly with safetensors. Every tensor is random, biases and norm weights included, so a
layout mistake anywhere changes the logits.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm.compat import dtype_kwargs
from llm.convert.keymap import hf_shape, hf_tensors
from llm.recipes.hfconfig import hf_config


def random_hf_tensors(recipe, seed: int = 0) -> dict:
    """HF tensor name → fp32 tensor: norms ~ 1 + N(0, 0.1), everything else ~ N(0, 0.02)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, parts in hf_tensors(recipe):
        shape = hf_shape(recipe, parts)
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        out[key] = (
            1.0 + 0.1 * noise
            if key.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight"))
            else 0.02 * noise
        )
    return out


def write_sample_weights(recipe, out_dir, seed: int = 0) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for ``recipe`` into ``out_dir``; returns ``out_dir``."""
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = random_hf_tensors(recipe, seed)
    cfg = hf_config(recipe, "float32")
    if recipe.family == "qwen":
        save_file(tensors, out_dir / "model.safetensors", metadata={"format": "pt"})
        (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        return out_dir

    import transformers

    # Only the family's own classes: transformers 4.36 (ModelLink 1.0's) has Llama but not yet Qwen2.
    prefix = "Qwen2" if recipe.family == "qwen2" else "Llama"
    config_cls, model_cls = getattr(transformers, f"{prefix}Config"), getattr(transformers, f"{prefix}ForCausalLM")
    fields = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")}
    config = config_cls(**fields, architectures=[model_cls.__name__], **dtype_kwargs("float32"))
    with torch.device("meta"):
        model = model_cls(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    allowed = {"lm_head.weight"} if recipe.architecture.tie_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise RuntimeError(
            f"sample weights do not match {model_cls.__name__}: missing {missing}, unexpected {unexpected}"
        )
    if recipe.architecture.tie_embeddings:
        model.tie_weights()
    model.save_pretrained(out_dir, safe_serialization=True)
    # The Hugging Face Hub's config.json layout, which every transformers release reads (5.x would
    # write `rope_parameters`, which 4.x ignores, falling back to another RoPE base).
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    (out_dir / "generation_config.json").unlink(missing_ok=True)
    return out_dir
