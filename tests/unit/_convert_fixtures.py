"""Shared by the convert tests: tiny HF models of each family, written once per session."""

from __future__ import annotations

from pathlib import Path

from llm.recipes import load_recipe
from llm.sample.weights import write_sample_weights

FAMILY_MODELS = ["tiny-qwen", "tiny", "tiny-tied", "tiny-llama"]  # qwen v1, qwen2.5 GQA+bias, qwen2 tied, llama


def make_hf(root: Path, model: str, seed: int = 0) -> Path:
    out = root / model / "hf"
    if not (out / "config.json").exists():
        write_sample_weights(load_recipe(model), out, seed=seed)
        (out / "tokenizer_config.json").write_text("{}\n")  # stands in for the tokenizer files
    return out


def read_safetensors_dir(path: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out
