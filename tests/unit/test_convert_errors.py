"""`python -m llm convert` refuses bad input with one clear sentence, before writing anything."""

from __future__ import annotations

import json
import shutil

import pytest

from _convert_fixtures import make_hf
from llm import checkpoint
from llm.convert import main as convert
from llm.errors import NpuboxError

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return make_hf(tmp_path_factory.mktemp("hf"), "tiny")


@pytest.fixture
def hf(tiny_hf, tmp_path):
    """A private copy of the tiny HF model, re-sharded into two files with an index."""
    from safetensors.torch import load_file, save_file

    out = tmp_path / "hf"
    shutil.copytree(tiny_hf, out)
    tensors = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, out / name)
        weight_map.update({k: name for k in ks})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out


def run(hf, tmp_path, *extra):
    return convert(["--model", "tiny", "--load-dir", str(hf), "--save-dir", str(tmp_path / "out"), *extra])


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_sharded_input_converts(hf, tmp_path):
    assert run(hf, tmp_path, "--tp", "2") == 0


def test_missing_shard(hf, tmp_path):
    (hf / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(NpuboxError, match=r"names shard\(s\) model-00002-of-00002.safetensors that are not in"):
        run(hf, tmp_path)
    assert_nothing_written(tmp_path)


def test_extra_shard(hf, tmp_path):
    shutil.copy(hf / "model-00001-of-00002.safetensors", hf / "model-00003-of-00003.safetensors")
    with pytest.raises(
        NpuboxError, match=r"model-00003-of-00003.safetensors are not listed in model.safetensors.index.json"
    ):
        run(hf, tmp_path)
    assert_nothing_written(tmp_path)


def test_corrupt_safetensors_header(hf, tmp_path):
    (hf / "model-00002-of-00002.safetensors").write_bytes(b"\xff" * 8 + b"{not json")
    with pytest.raises(NpuboxError, match=r"model-00002-of-00002.safetensors: not a readable safetensors file"):
        run(hf, tmp_path)
    assert_nothing_written(tmp_path)


def test_recipe_disagrees_with_config(hf, tmp_path):
    cfg = json.loads((hf / "config.json").read_text())
    cfg["num_key_value_heads"] = 4
    cfg["rms_norm_eps"] = 1e-5
    (hf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NpuboxError) as e:
        run(hf, tmp_path)
    assert "config.json disagrees with recipe tiny" in str(e.value)
    assert "num_query_groups: config.json gives 4, recipe tiny has 2" in str(e.value)
    assert "norm_epsilon: config.json gives 1e-05, recipe tiny has 1e-06" in str(e.value)
    assert_nothing_written(tmp_path)


def test_missing_tensor(tiny_hf, tmp_path):
    from safetensors.torch import load_file, save_file

    hf = tmp_path / "hf"
    shutil.copytree(tiny_hf, hf)
    tensors = load_file(hf / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.bias"]
    save_file(tensors, hf / "model.safetensors")
    with pytest.raises(
        NpuboxError, match=r"1 tensor\(s\) of a qwen2 model are missing, e.g. 'model.layers.1.self_attn.k_proj.bias'"
    ):
        run(hf, tmp_path)


def test_wrong_shape(tiny_hf, tmp_path):
    from safetensors.torch import load_file, save_file

    hf = tmp_path / "hf"
    shutil.copytree(tiny_hf, hf)
    tensors = load_file(hf / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(100, 64)
    save_file(tensors, hf / "model.safetensors")
    with pytest.raises(
        NpuboxError, match=r"'model.layers.0.mlp.up_proj.weight' has shape \[100, 64\], recipe tiny expects \[176, 64\]"
    ):
        run(hf, tmp_path)


@pytest.mark.parametrize("tp, what", [(3, r"num_attention_heads \(4\)"), (4, r"num_query_groups \(2\)")])
def test_tp_must_divide(hf, tmp_path, tp, what):
    with pytest.raises(NpuboxError, match=rf"--tp {tp} does not divide {what} of recipe tiny"):
        run(hf, tmp_path, "--tp", str(tp))
    assert_nothing_written(tmp_path)


def test_tp_must_divide_ffn(tmp_path):
    # qwen-14b: 40 heads (MHA), ffn 13696 = 2^7 × 107: TP 5 divides the heads, not the ffn
    with pytest.raises(NpuboxError, match=r"--tp 5 does not divide ffn_hidden_size \(13696\) of recipe qwen-14b"):
        convert(["--model", "qwen-14b", "--load-dir", str(tmp_path), "--save-dir", str(tmp_path / "out"), "--tp", "5"])


def test_pp_must_divide_layers_unless_layer_list(hf, tmp_path):
    with pytest.raises(
        NpuboxError,
        match=r"pipeline parallel size 3 does not divide num_layers=4; choose a divisor or give --num-layer-list",
    ):
        run(hf, tmp_path, "--pp", "3")
    with pytest.raises(
        NpuboxError,
        match=r"--num-layer-list 1,1: expected 3 positive numbers \(one per pipeline stage\) summing to num_layers=4",
    ):
        run(hf, tmp_path, "--pp", "3", "--num-layer-list", "1,1")
    assert run(hf, tmp_path, "--pp", "3", "--num-layer-list", "1,1,2") == 0
    assert checkpoint.find_layout(tmp_path / "out", 1) == (1, 3)


def test_unwritable_target(hf, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(
        NpuboxError,
        match=r"--save-dir .*file/out/ckpt: cannot create its parent directory .*file/out \(Not a directory\)",
    ):
        convert(["--model", "tiny", "--load-dir", str(hf), "--save-dir", str(blocker / "out" / "ckpt")])


def test_failure_midway_keeps_previous_save_dir(hf, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(hf, tmp_path, "--tp", "1") == 0  # the previous checkpoint
    previous = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    calls = []

    def fail_on_second_rank(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the run were killed while writing
        return real_save_rank(*args, **kwargs)

    real_save_rank = checkpoint.save_rank
    monkeypatch.setattr(checkpoint, "save_rank", fail_on_second_rank)
    with pytest.raises(KeyboardInterrupt):
        run(hf, tmp_path, "--tp", "2", "--overwrite")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == previous
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_mcore_source_needs_load_dir(tmp_path):
    with pytest.raises(NpuboxError, match=r"--from mcore needs --load-dir"):
        convert(["--model", "tiny", "--from", "mcore", "--to", "hf"])


def test_mcore_source_disagrees_with_recipe(hf, tmp_path):
    assert run(hf, tmp_path) == 0
    to_hf = ["--from", "mcore", "--to", "hf", "--load-dir", str(tmp_path / "out"), "--save-dir", str(tmp_path / "b")]
    with pytest.raises(NpuboxError, match=r"checkpoint args ffn_hidden_size=176, recipe tiny-llama has 160"):
        convert(["--model", "tiny-llama", *to_hf])
