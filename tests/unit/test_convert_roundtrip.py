"""Acceptance 1: HF → mcore TP2 PP2 → mcore TP1 PP4 → HF is bit-exact, for the tiny model of each family."""

from __future__ import annotations

import json

import pytest

from _convert_fixtures import FAMILY_MODELS, make_hf, read_safetensors_dir
from llm import checkpoint
from llm.convert import main as convert
from llm.recipes import load_recipe

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


@pytest.mark.parametrize("model", FAMILY_MODELS)
def test_round_trip_is_bit_exact(model, hf_root, tmp_path):
    hf = make_hf(hf_root, model)
    a, b, back = tmp_path / "tp2pp2", tmp_path / "tp1pp4", tmp_path / "back"
    assert convert(["--model", model, "--load-dir", str(hf), "--save-dir", str(a), "--tp", "2", "--pp", "2"]) == 0
    reshard = ["--from", "mcore", "--to", "mcore", "--load-dir", str(a), "--save-dir", str(b), "--tp", "1", "--pp", "4"]
    assert convert(["--model", model, *reshard]) == 0
    to_hf = ["--from", "mcore", "--to", "hf", "--load-dir", str(b), "--save-dir", str(back), "--tokenizer-dir", str(hf)]
    assert convert(["--model", model, *to_hf]) == 0

    original, result = read_safetensors_dir(hf), read_safetensors_dir(back)
    assert sorted(original) == sorted(result)
    for key, tensor in original.items():
        assert result[key].dtype == tensor.dtype, key
        assert torch.equal(result[key], tensor), key

    index = json.loads((back / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(original)
    assert (back / "tokenizer_config.json").exists()
    cfg = json.loads((back / "config.json").read_text())
    assert cfg["architectures"] == [load_recipe(model).hf_architecture]

    # the intermediate layouts are what Megatron names them
    assert checkpoint.read_latest(a) == 1 and checkpoint.find_layout(a, 1) == (2, 2)
    assert checkpoint.find_layout(b, 1) == (1, 4)
    assert (a / "iter_0000001" / "mp_rank_01_001" / "model_optim_rng.pt").is_file()
    assert (b / "iter_0000001" / "mp_rank_00_003" / "model_optim_rng.pt").is_file()


def test_mcore_rank_layout(hf_root, tmp_path):
    """QKV packed per query group, SwiGLU [gate; up] per rank, vocab padded with zeros: checked by hand."""
    from safetensors.torch import load_file

    recipe = load_recipe("tiny-llama")  # vocab 2000 → padded 2048 at tp 2: padding rows exist
    hf = make_hf(hf_root, "tiny-llama")
    w = load_file(hf / "model.safetensors")
    out = tmp_path / "tp2"
    argv = ["--model", "tiny-llama", "--load-dir", str(hf), "--save-dir", str(out), "--tp", "2", "--pp", "1"]
    assert convert(argv) == 0
    assert (out / "iter_0000001" / "mp_rank_01" / "model_optim_rng.pt").is_file()
    rank1 = checkpoint.load_rank(out, 1, 1, 0, 1)
    m = rank1["model"]
    a = recipe.architecture
    d = a.head_dim  # 16; 4 heads, 2 groups → rank 1 holds group 1: q heads 2,3, k head 1, v head 1
    q, k, v = (w[f"model.layers.0.self_attn.{n}_proj.weight"] for n in "qkv")
    expected_qkv = torch.cat([q[2 * d : 4 * d], k[d : 2 * d], v[d : 2 * d]])
    assert torch.equal(m["decoder.layers.0.self_attention.linear_qkv.weight"], expected_qkv)
    f = a.ffn_hidden_size // 2
    gate, up = w["model.layers.0.mlp.gate_proj.weight"], w["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(m["decoder.layers.0.mlp.linear_fc1.weight"], torch.cat([gate[f:], up[f:]]))
    assert torch.equal(m["decoder.layers.0.mlp.linear_fc2.weight"], w["model.layers.0.mlp.down_proj.weight"][:, f:])
    emb = m["embedding.word_embeddings.weight"]
    assert emb.shape == (1024, a.hidden_size)
    assert torch.equal(emb[: 2000 - 1024], w["model.embed_tokens.weight"][1024:])
    assert not emb[2000 - 1024 :].any()
    assert rank1["checkpoint_version"] == 3.0 and rank1["iteration"] == 1
    args = rank1["args"]
    assert (args.tensor_model_parallel_size, args.padded_vocab_size, args.num_query_groups) == (2, 2048, 2)


def test_num_layer_list_and_dtype(hf_root, tmp_path):
    hf = make_hf(hf_root, "tiny")
    out = tmp_path / "uneven"
    uneven = ["--tp", "1", "--pp", "2", "--num-layer-list", "1,3", "--dtype", "bf16"]
    assert convert(["--model", "tiny", "--load-dir", str(hf), "--save-dir", str(out), *uneven]) == 0
    first, last = checkpoint.load_rank(out, 1, 0, 0, 2), checkpoint.load_rank(out, 1, 0, 1, 2)
    layers = lambda s: {k.split(".")[2] for k in s["model"] if k.startswith("decoder.layers.")}  # noqa: E731
    assert layers(first) == {"0"} and layers(last) == {"0", "1", "2"}
    assert first["model"]["embedding.word_embeddings.weight"].dtype == torch.bfloat16
    assert "output_layer.weight" in last["model"] and "embedding.word_embeddings.weight" not in last["model"]
    assert first["args"].num_layer_list == "1,3" and first["args"].bf16

    back = tmp_path / "back"  # mcore → HF reads the layer list from args
    to_hf = ["--from", "mcore", "--to", "hf", "--load-dir", str(out), "--save-dir", str(back)]
    assert convert(["--model", "tiny", *to_hf]) == 0
    original, result = read_safetensors_dir(hf), read_safetensors_dir(back)
    for key, tensor in original.items():
        assert torch.equal(result[key], tensor.to(torch.bfloat16)), key


def test_workspace_defaults(hf_root, tmp_path, monkeypatch):
    monkeypatch.setenv("NPUBOX_WORKSPACE", str(tmp_path))
    make_hf(tmp_path / "models", "tiny")
    assert convert(["--model", "tiny"]) == 0
    assert checkpoint.find_layout(tmp_path / "checkpoints" / "tiny" / "hf-tp1-pp1", 1) == (1, 1)
