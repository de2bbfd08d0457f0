"""Recipes: every model of the guides is there and consistent; `python -m llm recipe check` lists every disagreement."""

from __future__ import annotations

import json

import pytest

from llm.recipes import load_recipe, recipe_names
from llm.recipes.cli import main as recipe_cli
from llm.recipes.hfconfig import architecture_from_hf_config, disagreements, hf_config

GUIDE_MODELS = [
    "qwen-7b",
    "qwen-14b",
    "qwen-72b",
    "qwen15-7b",
    "qwen15-14b",
    "qwen15-72b",
    "qwen2-0.5b",
    "qwen2-1.5b",
    "qwen2-7b",
    "qwen2-72b",
    "qwen25-0.5b",
    "qwen25-1.5b",
    "qwen25-3b",
    "qwen25-7b",
    "qwen25-14b",
    "qwen25-32b",
    "qwen25-72b",
    "aquila2-7b",
    "aquila2-34b",
]
TINY = {"tiny-qwen": "qwen", "tiny": "qwen2", "tiny-tied": "qwen2", "tiny-llama": "llama"}

# Qwen/Qwen2.5-7B's config.json as published on the Hugging Face hub.
QWEN25_7B_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 152064,
}


@pytest.mark.parametrize("name", GUIDE_MODELS + list(TINY))
def test_recipe_is_consistent(name):
    r = load_recipe(name)
    a = r.architecture
    assert r.source.strip()
    if not r.tiny:
        assert "huggingface.co/" in r.source and "seed" in r.source
    for phase in ("convert", "pretrain", "eval"):
        tp, pp = r.defaults(phase).tp, r.defaults(phase).pp
        assert a.num_query_groups % tp == 0 and a.ffn_hidden_size % tp == 0, (phase, tp)
        assert a.padded_vocab_size(tp) % tp == 0 and a.padded_vocab_size(tp) >= a.vocab_size
        assert a.num_layers % pp == 0, (phase, pp)
    if r.family == "qwen":
        assert r.architecture.num_query_groups == r.architecture.num_attention_heads and a.add_qkv_bias


def test_every_family_has_a_tiny_model():
    assert {name: load_recipe(name).family for name in TINY} == TINY
    assert set(GUIDE_MODELS + list(TINY)) <= set(recipe_names())


def test_qwen25_7b_matches_the_published_config():
    assert disagreements(load_recipe("qwen25-7b"), QWEN25_7B_CONFIG) == []
    assert (
        load_recipe("qwen25-7b").architecture.padded_vocab_size(4) == 152064
    )  # pretrain_qwen25_7b_32k_ptd.sh's --padded-vocab-size


@pytest.mark.parametrize("name", ["tiny", "tiny-tied", "tiny-llama", "qwen2-72b", "aquila2-34b"])
def test_transformers_reads_our_config_back(name):
    """hf_config → transformers' config class → to_dict() (transformers 5 rewrites rope_theta) → same recipe."""
    transformers = pytest.importorskip("transformers")
    r = load_recipe(name)
    cfg = hf_config(r)
    cls = transformers.Qwen2Config if r.family == "qwen2" else transformers.LlamaConfig
    rebuilt = cls(**{k: v for k, v in cfg.items() if k not in ("model_type", "torch_dtype")}).to_dict()
    assert disagreements(r, rebuilt) == []


def test_qwen_v1_reads_intermediate_size_as_twice_the_ffn():
    cfg = hf_config(load_recipe("qwen-7b"))
    assert cfg["intermediate_size"] == 22016 and cfg["kv_channels"] == 128
    assert architecture_from_hf_config("qwen", cfg)["ffn_hidden_size"] == 11008


def test_check_cli(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN25_7B_CONFIG))
    assert recipe_cli(["check", "--model", "qwen25-7b", "--hf-config", str(path)]) == 0
    assert "agrees with recipe qwen25-7b" in capsys.readouterr().out

    wrong = dict(QWEN25_7B_CONFIG, num_key_value_heads=8, rope_theta=10000.0, tie_word_embeddings=True)
    path.write_text(json.dumps(wrong))
    assert recipe_cli(["check", "--model", "qwen25-7b", "--hf-config", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "disagrees with recipe qwen25-7b (3)" in out
    assert "num_query_groups: config.json gives 8, recipe qwen25-7b has 4" in out
    assert "rotary_base: config.json gives 10000.0, recipe qwen25-7b has 1000000.0" in out
    assert "tie_embeddings: config.json gives True, recipe qwen25-7b has False" in out


def test_list_and_show(capsys):
    assert recipe_cli(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in GUIDE_MODELS)
    assert recipe_cli(["show", "qwen25-7b"]) == 0
    out = capsys.readouterr().out
    assert "hidden_size: 3584" in out and "padded_vocab_size(tp=4) = 152064" in out


def test_training_defaults_are_required_and_typed(tmp_path):
    from llm.errors import NpuboxError
    from llm.recipes import RECIPE_DIR, Recipe
    from llm.yamlfile import load_model

    text = (RECIPE_DIR / "tiny.yaml").read_text()
    path = tmp_path / "tiny.yaml"
    path.write_text(text[: text.index("training:")])
    with pytest.raises(NpuboxError, match=r"field `training` is missing"):
        load_model(path, Recipe)
    path.write_text(text.replace("lr: 1.0e-3", "lr: 1e-3"))  # YAML 1.1 reads 1e-3 as a string
    with pytest.raises(NpuboxError, match=r"field `training.lr` has value '1e-3': expected a valid number"):
        load_model(path, Recipe)


def test_one_tp_rule_for_convert_and_the_model():
    from llm.errors import NpuboxError
    from llm.model import transformer_config

    recipe = load_recipe("tiny")
    for check in (recipe.check_tp, lambda tp: transformer_config(recipe, tp=tp)):
        with pytest.raises(NpuboxError, match=r"--tp 3 does not divide num_attention_heads \(4\) of recipe tiny"):
            check(3)
