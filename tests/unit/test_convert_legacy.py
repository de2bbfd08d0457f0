"""`llm convert --format legacy`: checkpoints of Megatron's legacy GPTModel, the model ModelLink v1.0.RC1.0's scripts
train (no --use-mcore-models). Round trips are bit-exact; the keys, nesting and shapes are what Megatron-LM bcce6f54's
own model (with MindSpeed 224ae35e's and ModelLink f33da62b's patches) saves, and its own load_checkpoint loads them
strictly; what its own save_checkpoint writes converts back to the HF weights bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from _convert_fixtures import make_hf, read_safetensors_dir
from _example_scripts import REPO, extract_archive, source_archive
from _mindspeed_fixtures import ML_RC1
from llm import checkpoint
from llm.convert import main as convert
from llm.errors import NpuboxError
from llm.recipes import load_recipe

torch = pytest.importorskip("torch")

MEGATRON_BCCE6F = ("Megatron-LM", "bcce6f54e075e3c3374ea67adefe54f3f2da2b07")
MODELLINK_RC1 = ("MindSpeed-LLM", ML_RC1)  # ModelLink v1.0.RC1.0
ASCENDSPEED = ("MindSpeed", "224ae35e8fc96778f957029d1371ddb623452a50")  # the MindSpeed (AscendSpeed) it runs on


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


def converts(*argv) -> None:
    assert convert([str(a) for a in argv]) == 0


def assert_same_hf(original_dir, result_dir):
    original, result = read_safetensors_dir(original_dir), read_safetensors_dir(result_dir)
    assert sorted(original) == sorted(result)
    for key, tensor in original.items():
        assert result[key].dtype == tensor.dtype and torch.equal(result[key], tensor), key


@pytest.mark.parametrize("model", ["tiny-qwen", "tiny-llama", "tiny-tied"])
def test_legacy_round_trip_is_bit_exact(model, hf_root, tmp_path):
    """HF -> legacy TP2 PP2 -> HF, and legacy TP2 PP2 -> megatron-core TP1 PP4 -> legacy TP2 PP1 -> HF."""
    hf = make_hf(hf_root, model)
    legacy, mcore, legacy2 = tmp_path / "legacy-tp2pp2", tmp_path / "mcore-tp1pp4", tmp_path / "legacy-tp2pp1"
    converts("--model", model, "--load-dir", hf, "--save-dir", legacy, "--tp", 2, "--pp", 2, "--format", "legacy")
    converts("--model", model, "--from", "mcore", "--to", "hf", "--load-dir", legacy, "--save-dir", tmp_path / "back")
    assert_same_hf(hf, tmp_path / "back")

    converts("--model", model, "--from", "mcore", "--load-dir", legacy, "--save-dir", mcore, "--tp", 1, "--pp", 4)
    relayout = ("--from", "mcore", "--load-dir", mcore, "--save-dir", legacy2, "--format", "legacy")
    converts("--model", model, *relayout, "--tp", 2, "--pp", 1)
    converts("--model", model, "--from", "mcore", "--to", "hf", "--load-dir", legacy2, "--save-dir", tmp_path / "b2")
    assert_same_hf(hf, tmp_path / "b2")
    assert "decoder.final_layernorm.weight" in checkpoint.load_rank(mcore, 1, 0, 3, 4)["model"]
    assert "language_model" in checkpoint.load_rank(legacy2, 1, 1, 0, 1)["model"]


def test_legacy_rank_files(hf_root, tmp_path):
    """The nesting of each pipeline stage, the args Megatron bcce6f54's loader reads, and tensors packed as in the
    megatron-core layout (the same rank blocks under other names)."""
    hf = make_hf(hf_root, "tiny-qwen")
    legacy, mcore = tmp_path / "legacy", tmp_path / "mcore"
    for layout, out in (("legacy", legacy), ("mcore", mcore)):
        converts("--model", "tiny-qwen", "--load-dir", hf, "--save-dir", out, "--tp", 2, "--pp", 2, "--format", layout)
    first, last = checkpoint.load_rank(legacy, 1, 1, 0, 2), checkpoint.load_rank(legacy, 1, 1, 1, 2)
    assert set(first["model"]) == {"language_model"} == set(last["model"])
    assert set(first["model"]["language_model"]) == {"embedding", "encoder"}
    assert set(last["model"]["language_model"]) == {"encoder", "output_layer"}
    assert set(first["model"]["language_model"]["embedding"]) == {"word_embeddings"}
    encoder = last["model"]["language_model"]["encoder"]
    assert "final_norm.weight" in encoder and "final_norm.weight" not in first["model"]["language_model"]["encoder"]
    layer_1 = ("input_norm", "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", "post_attention_norm", "self_attention.dense")
    assert sorted(k for k in encoder if k.startswith("layers.1.")) == [
        *(f"layers.1.{name}.weight" for name in layer_1),
        "layers.1.self_attention.query_key_value.bias",
        "layers.1.self_attention.query_key_value.weight",
    ]
    assert not any(k.startswith("layers.2.") for k in encoder)  # layers numbered within the stage

    m = checkpoint.load_rank(mcore, 1, 1, 1, 2)["model"]
    qkv = m["decoder.layers.1.self_attention.linear_qkv.weight"]
    assert torch.equal(encoder["layers.1.self_attention.query_key_value.weight"], qkv)
    assert torch.equal(encoder["layers.1.mlp.dense_h_to_4h.weight"], m["decoder.layers.1.mlp.linear_fc1.weight"])
    assert torch.equal(last["model"]["language_model"]["output_layer"]["weight"], m["output_layer.weight"])

    args = first["args"]
    assert first["checkpoint_version"] == 3.0 and first["iteration"] == 1 and args.iteration == 1
    assert (args.tensor_model_parallel_size, args.pipeline_model_parallel_size, args.padded_vocab_size) == (2, 2, 2048)
    assert args.add_position_embedding and args.position_embedding_type == "rope" and args.add_qkv_bias
    assert not args.add_bias_linear and args.swiglu and args.normalization == "RMSNorm"
    assert not hasattr(checkpoint.load_rank(mcore, 1, 0, 0, 2)["args"], "add_position_embedding")  # mcore: unchanged


def test_format_is_for_megatron_targets(tmp_path):
    with pytest.raises(NpuboxError, match=r"--format legacy names the layout of a Megatron checkpoint to write"):
        converts("--model", "tiny", "--from", "mcore", "--to", "hf", "--load-dir", tmp_path, "--format", "legacy")


def test_neither_layout_is_refused(tmp_path):
    checkpoint.save_rank(tmp_path / "odd", 1, 0, 0, 1, {"model": {"transformer.wte.weight": torch.zeros(2)}})
    checkpoint.write_latest(tmp_path / "odd", 1)
    neither = r"neither a megatron-core model \(decoder.layers...\) nor Megatron's legacy one \(language_model...\)"
    with pytest.raises(NpuboxError, match=neither):
        converts("--model", "tiny", "--from", "mcore", "--to", "hf", "--load-dir", tmp_path / "odd")


# --- against the legacy model itself -------------------------------------------------------------


@pytest.fixture(scope="module")
def stack_trees(tmp_path_factory):
    """Megatron-LM bcce6f54, ModelLink v1.0.RC1.0 and its MindSpeed, from ../shared/sources."""
    root = tmp_path_factory.mktemp("legacy-stack")
    trees = []
    for name, commit in (MEGATRON_BCCE6F, MODELLINK_RC1, ASCENDSPEED):
        archive = source_archive(name, commit)
        if not archive.is_file():
            pytest.skip(f"{archive.name} is not in {archive.parent}")
        extract_archive(archive, root)
        trees.append(root / f"{name}-{commit}")
    return trees


# Training values that only have to parse (nothing trains); the parameters are made on the CPU, not on a device.
RUN_FLAGS = (
    "--seq-length 32 --micro-batch-size 1 --global-batch-size 2 --train-iters 1 --lr 0 --tokenizer-type "
    "PretrainedFromHF --no-load-optim --no-load-rng --save-interval 1 --no-save-optim --no-save-rng "
    "--use-cpu-initialization"
).split()


def legacy_flags(model: str, load, save) -> list[str]:
    """pretrain_gpt.py's flags for ``model`` as the engine composes them for ModelLink v1.0.RC1.0's qwen-7b script
    (its model-shape flags from the recipe, the script's switches), at TP2 PP2, starting from ``load``."""
    from llm.pretrain.mindspeed_llm.scripts import QWEN_7B, model_flags

    script = replace(QWEN_7B, differs={})  # the recipe's shape as it is
    shape = [token for name, values in model_flags(load_recipe(model), 2, 32, script) for token in (name, *values)]
    layout = ["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"]
    return [*layout, *shape, *script.switches, *RUN_FLAGS, "--load", str(load), "--save", str(save)]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-qwen", "tiny-llama", "tiny-tied"])
def test_the_legacy_model_loads_and_saves_what_convert_reads(model, stack_trees, hf_root, tmp_path):
    hf = make_hf(hf_root, model)
    converted, saved, back = tmp_path / "hf-tp2-pp2", tmp_path / "saved", tmp_path / "back"
    converts("--model", model, "--load-dir", hf, "--save-dir", converted, "--tp", 2, "--pp", 2, "--format", "legacy")
    megatron, modellink, ascendspeed = stack_trees
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(map(str, (megatron, modellink, ascendspeed, REPO))),
        "CUDA_DEVICE_MAX_CONNECTIONS": "1",  # the script's export, which bcce6f's validate_args checks
    }
    harness = [sys.executable, str(REPO / "tests/unit/_legacy_megatron.py"), str(report), "--"]
    run = subprocess.run(
        [*harness, *legacy_flags(model, converted, saved)],
        cwd=megatron,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count(f"successfully loaded checkpoint from {converted} at iteration 1") == 4

    found_args = json.loads(report.read_text())["checkpoint_args"]  # what --use-checkpoint-args would take
    a = load_recipe(model).architecture
    assert found_args == {
        "num_layers": a.num_layers,
        "hidden_size": a.hidden_size,
        "ffn_hidden_size": a.ffn_hidden_size,
        "num_attention_heads": a.num_attention_heads,
        "num_query_groups": a.num_query_groups,
        "group_query_attention": a.num_query_groups != a.num_attention_heads,
        "kv_channels": a.head_dim,
        "padded_vocab_size": a.padded_vocab_size(2),
        "position_embedding_type": "rope",
        "add_bias_linear": False,
        "swiglu": True,
        "untie_embeddings_and_output_weights": not a.tie_embeddings,
        "normalization": "RMSNorm",
        "tensor_model_parallel_size": 2,
        "pipeline_model_parallel_size": 2,
        "iteration": 1,
    }

    ranks = json.loads(report.read_text())["ranks"]
    assert sorted(ranks) == ["0,0", "0,1", "1,0", "1,1"]
    for rank, found in ranks.items():
        assert found["megatron"] == found["ours"], rank  # the same nested keys, each of the same shape
        assert found["equal_values"] and found["iteration"] == 1, rank
    last = ranks["1,1"]["megatron"]
    head = "word_embeddings_for_head/weight" if model == "tiny-tied" else "language_model/output_layer/weight"
    assert head in last and "language_model/encoder/final_norm.weight" in last
    assert "language_model/embedding/word_embeddings/weight" in ranks["1,0"]["megatron"]

    # what Megatron's own save_checkpoint wrote (its args pickle its enums) goes back to the HF weights
    converts("--model", model, "--from", "mcore", "--to", "hf", "--load-dir", saved, "--save-dir", back)
    assert_same_hf(hf, back)
