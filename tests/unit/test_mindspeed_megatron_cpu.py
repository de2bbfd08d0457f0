"""The closest stand-in for the NPU engine that a CPU can run: Megatron-LM core_v0.12.1's own ``pretrain_gpt.py``
(the Megatron of the 2.3.0 and 26.0.0 stacks), TP2 × PP2 on 4 CPU processes with gloo, starting from what
`llm convert` wrote and saving in its own format, which `llm convert` turns back into the HF weights bit for bit
(at learning rate 0 the weights it saves are the ones it loaded). Its iteration lines feed the engine's log parser.

What it takes (each named in _megatron_on_cpu.py): npubox's CPU shims and five CPU answers to questions Megatron's
start-up and checkpointing ask of a GPU; the flags that keep CUDA-only fusions off; Megatron's dataset helpers
compiled (g++ and pybind11; the CPU twins compile them at image build). On this host's venv Megatron core_v0.12.1
does not import (no ``six``): the test names what is missing and skips; in a twin it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from _convert_fixtures import read_safetensors_dir
from _example_scripts import extract_archive, source_archive
from _pretrain_fixtures import REPO, env_for, free_port, make_workspace
from llm.pretrain.mindspeed_llm.megatron_log import parse_line
from llm.recipes import load_recipe

CORE_V0_12_1 = "a845aa7e12b3a117e24c2352b9e3e60bad2e3a17"
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def megatron_tree(tmp_path_factory):
    """Megatron-LM core_v0.12.1 from ../shared/sources, its dataset helpers compiled; or, in a CPU twin,
    the stack's own pinned checkout ($NPUBOX_MEGATRON_TREE, helpers compiled with the image)."""
    if os.environ.get("NPUBOX_MEGATRON_TREE"):
        return Path(os.environ["NPUBOX_MEGATRON_TREE"])
    root = tmp_path_factory.mktemp("megatron")
    extract_archive(source_archive("Megatron-LM", CORE_V0_12_1), root)
    tree = root / f"Megatron-LM-{CORE_V0_12_1}"
    env = env_for(root, PYTHONPATH=f"{tree}:{REPO}")
    probe = subprocess.run(
        [sys.executable, "-c", "import megatron.training.training"], cwd=tree, env=env, capture_output=True, text=True
    )
    if probe.returncode:
        pytest.skip(f"Megatron-LM core_v0.12.1 does not import here: {probe.stderr.strip().splitlines()[-1]}")
    includes = subprocess.run([sys.executable, "-m", "pybind11", "--includes"], capture_output=True, text=True)
    if includes.returncode or shutil.which("g++") is None:
        pytest.skip("compiling Megatron's dataset helpers needs g++ and pybind11")
    helpers = tree / "megatron/core/datasets"
    subprocess.run(
        [
            "g++",
            "-O3",
            "-Wall",
            "-shared",
            "-std=c++11",
            "-fPIC",
            *includes.stdout.split(),
            str(helpers / "helpers.cpp"),
            "-o",
            str(helpers / f"helpers_cpp{sysconfig.get_config_var('EXT_SUFFIX')}"),
        ],
        check=True,
        capture_output=True,
    )
    return tree


def megatron_flags(workspace, load, save, tree) -> list[str]:
    """pretrain_gpt.py's flags for the tiny recipe, as the engine composes them for a model, CPU-safe; the
    checkpoint in Megatron's torch format (core_r0.8.0's default; `--ckpt-format torch` from core_v0.11)."""
    a = load_recipe("tiny").architecture
    return [
        "--tensor-model-parallel-size",
        "2",
        "--pipeline-model-parallel-size",
        "2",
        "--num-layers",
        str(a.num_layers),
        "--hidden-size",
        str(a.hidden_size),
        "--ffn-hidden-size",
        str(a.ffn_hidden_size),
        "--num-attention-heads",
        str(a.num_attention_heads),
        "--group-query-attention",
        "--num-query-groups",
        str(a.num_query_groups),
        "--add-qkv-bias",
        "--max-position-embeddings",
        str(a.max_position_embeddings),
        "--rotary-base",
        str(int(a.rotary_base)),
        "--norm-epsilon",
        str(a.norm_epsilon),
        "--normalization",
        "RMSNorm",
        "--swiglu",
        "--position-embedding-type",
        "rope",
        "--disable-bias-linear",
        "--untie-embeddings-and-output-weights",
        # NullTokenizer: vocab_size + 1 (its end-of-document id) = the recipe's vocabulary
        "--tokenizer-type",
        "NullTokenizer",
        "--vocab-size",
        str(a.vocab_size - 1),
        "--make-vocab-size-divisible-by",
        str(a.make_vocab_size_divisible_by),
        "--seq-length",
        "32",
        "--micro-batch-size",
        "2",
        "--global-batch-size",
        "4",
        "--train-iters",
        "3",
        "--lr",
        "0.0",
        "--min-lr",
        "0.0",
        "--data-path",
        str(workspace / "data/tiny/sample_text_document"),
        "--split",
        "100,0,0",
        "--load",
        str(load),
        "--no-load-optim",
        "--no-load-rng",
        "--save",
        str(save),
        "--save-interval",
        "3",
        "--no-save-optim",
        "--no-save-rng",
        *(
            ["--ckpt-format", "torch"]
            if "'--ckpt-format'" in (tree / "megatron/training/arguments.py").read_text()
            else []
        ),
        "--log-interval",
        "1",
        "--eval-iters",
        "0",
        "--eval-interval",
        "1000",
        "--distributed-backend",
        "gloo",
        # CUDA-only kernels off: Transformer Engine, fused softmax / bias-GeLU / SwiGLU / dropout / RoPE, apex
        "--transformer-impl",
        "local",
        "--no-gradient-accumulation-fusion",
        "--no-masked-softmax-fusion",
        "--no-bias-gelu-fusion",
        "--no-bias-swiglu-fusion",
        "--no-bias-dropout-fusion",
        "--no-persist-layer-norm",
        "--no-rope-fusion",
    ]


def _convert_tp2_pp2(env: dict) -> None:
    """`llm convert` of the workspace's tiny HF model to checkpoints/tiny/hf-tp2-pp2."""
    argv = [sys.executable, "-m", "llm", "convert", "--model", "tiny", "--tp", "2", "--pp", "2"]
    subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True)


def _convert_back(load: Path, save: Path, env: dict) -> subprocess.CompletedProcess:
    """`llm convert --from mcore --to hf` of ``load`` into ``save``."""
    argv = [sys.executable, "-m", "llm", "convert", "--model", "tiny", "--from", "mcore", "--to", "hf"]
    argv += ["--load-dir", str(load), "--save-dir", str(save)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.sources
def test_megatron_pretrain_gpt_trains_from_and_saves_llm_convert_checkpoints(megatron_tree, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    converted, saved, back = ws / "checkpoints/tiny/hf-tp2-pp2", tmp_path / "saved", tmp_path / "back"
    env = env_for(ws)
    _convert_tp2_pp2(env)

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "4",
            "--master-port",
            str(free_port()),
            str(REPO / "tests/unit/_megatron_on_cpu.py"),
            *megatron_flags(ws, converted, saved, megatron_tree),
        ],
        cwd=megatron_tree,
        env=env_for(ws, PYTHONPATH=f"{megatron_tree}:{REPO}", CUDA_DEVICE_MAX_CONNECTIONS="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    errors = [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line and "rank" in line]
    assert run.returncode == 0, "\n".join(errors[:12]) + "\n" + run.stdout[-2000:] + run.stderr[-2000:]
    assert f"successfully loaded checkpoint from {converted}" in run.stdout
    logs = [log for log in map(parse_line, run.stdout.splitlines()) if log is not None]
    assert [log.iteration for log in logs] == [2, 3]  # resumed after the converted checkpoint's iteration 1
    assert all(log.loss and 0 < log.loss < 20 and log.skipped_iterations == 0 for log in logs)

    convert_back = _convert_back(saved, back, env)
    assert convert_back.returncode == 0, convert_back.stderr[-2000:]
    original, result = read_safetensors_dir(ws / "models/tiny/hf"), read_safetensors_dir(back)
    assert sorted(original) == sorted(result)
    assert all(torch.equal(original[k], result[k]) for k in original)


def test_checkpoints_holding_megatrons_enums_convert_and_resume(tmp_path):
    """Megatron-LM (core_v0.12 on) pickles enums in a checkpoint's args; `llm convert` reads such a checkpoint
    (the enums as inert placeholders, torch.load(weights_only=True) throughout) and `llm pretrain` resumes it."""
    import argparse

    from megatron.core.enums import ModelType
    from megatron.core.transformer.enums import AttnBackend

    from llm import checkpoint

    ws = make_workspace(tmp_path / "ws")
    converted, back = ws / "checkpoints/tiny/hf-tp2-pp2", tmp_path / "back"
    env = env_for(ws)
    _convert_tp2_pp2(env)
    for tp_rank in range(2):  # what Megatron's save_checkpoint adds to the args
        for pp_rank in range(2):
            path = checkpoint.rank_file(converted, 1, tp_rank, pp_rank, 2)
            state = torch.load(path, weights_only=False)
            state["args"] = argparse.Namespace(
                **vars(state["args"]), attention_backend=AttnBackend.auto, model_type=ModelType.encoder_or_decoder
            )
            torch.save(state, path)
    # In a process that has not imported megatron (megatron-core allowlists its own enums when imported):
    plain = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, torch; torch.load(sys.argv[1], weights_only=True)",
            str(checkpoint.rank_file(converted, 1, 0, 0, 2)),
        ],
        capture_output=True,
        text=True,
    )
    assert plain.returncode != 0 and "Unsupported global" in plain.stderr
    resume = subprocess.run(
        [
            sys.executable,
            "-c",
            "from llm.pretrain.config import parse_config; import sys; "
            "print(parse_config(['--model', 'tiny', '--load', sys.argv[1]]).load)",
            str(converted),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resume.returncode == 0 and resume.stdout.strip() == str(converted), resume.stderr[-2000:]
    out = _convert_back(converted, back, env)
    assert out.returncode == 0, out.stderr[-2000:]
    original, result = read_safetensors_dir(ws / "models/tiny/hf"), read_safetensors_dir(back)
    assert all(torch.equal(original[k], result[k]) for k in original) and sorted(original) == sorted(result)
