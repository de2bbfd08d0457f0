"""Pretrain pieces that need no training run: flags and defaults, sampler, FLOPs/MFU, peak table,
checkpoint pruning; and a run killed while writing a checkpoint."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from _pretrain_fixtures import MODEL, REPO, TRAIN_FLAGS, env_for, write_dataset
from llm.accel import Accelerator
from llm.errors import NpuboxError
from llm.pretrain.config import parse_config
from llm.pretrain.mcore.data import sample_indices
from llm.pretrain.metrics import flops_per_step, format_line, step_metrics
from llm.recipes import load_recipe
from llm.workspace import Workspace


def test_model_alone_defaults_to_workspace_paths(ws):
    cfg = parse_config(["--model", MODEL], ws)
    assert cfg.data_path == str(ws.root / "data" / MODEL / "sample_text_document")
    assert cfg.save == str(ws.root / "checkpoints" / MODEL / "pretrain")
    assert cfg.load is None  # nothing converted yet: random init
    (ws.root / "checkpoints" / MODEL / "hf-tp1-pp1").mkdir(parents=True)
    (ws.root / "checkpoints" / MODEL / "hf-tp1-pp1" / "latest_checkpointed_iteration.txt").write_text("1")
    assert parse_config(["--model", MODEL], ws).load == str(ws.root / "checkpoints" / MODEL / "hf-tp1-pp1")
    (ws.root / "checkpoints" / MODEL / "pretrain").mkdir(parents=True)
    (ws.root / "checkpoints" / MODEL / "pretrain" / "latest_checkpointed_iteration.txt").write_text("5")
    assert parse_config(["--model", MODEL], ws).load == cfg.save  # our own run: resume it


def test_qwen25_7b_script_flags_are_the_defaults_of_qwen25_7b(tmp_path):
    write_dataset(tmp_path / "d", count=5)
    cfg = parse_config(["--model", "qwen25-7b", "--data-path", str(tmp_path / "d")], Workspace(tmp_path))
    assert (cfg.tp, cfg.pp, cfg.seq_length, cfg.micro_batch_size, cfg.global_batch_size) == (4, 2, 4096, 1, 64)
    assert (cfg.lr, cfg.min_lr, cfg.train_iters, cfg.warmup, cfg.bf16) == (1.25e-6, 1.25e-7, 2000, 20, True)
    assert (cfg.weight_decay, cfg.clip_grad, cfg.adam_beta2, cfg.seed, cfg.init_method_std) == (
        0.1,
        1.0,
        0.95,
        42,
        0.01,
    )


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--data-path", "/nonexistent/x"], ["/nonexistent/x.bin/.idx", "indexed dataset"]),
        (["--seq-length", "100000"], ["--seq-length 100000", "max_position_embeddings"]),
        (["--train-iters", "0"], ["--train-iters is 0"]),
        (["--load", "/nonexistent/ckpt"], ["--load /nonexistent/ckpt", "latest_checkpointed_iteration.txt"]),
    ],
)
def test_bad_flags_name_the_flag_and_value(ws, argv, words):
    with pytest.raises(NpuboxError) as e:
        parse_config(["--model", MODEL, *argv], ws)
    for w in words:
        assert w in str(e.value)


def test_global_batch_must_split_into_micro_batches_per_data_parallel_rank(ws):
    cfg = parse_config(["--model", MODEL, "--micro-batch-size", "2", "--global-batch-size", "6"], ws)
    assert cfg.check(world_size=1) == 1
    with pytest.raises(NpuboxError, match="--global-batch-size 6 is not a multiple"):
        cfg.check(world_size=2)
    with pytest.raises(NpuboxError, match="world size 3 is not a multiple"):
        parse_config(["--model", MODEL, "--tp", "2"], ws).check(world_size=3)


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_each_step_reads_the_same_samples_whatever_the_data_parallel_size(ws, dp):
    cfg = parse_config(["--model", MODEL, "--micro-batch-size", "2", "--global-batch-size", "8"], ws)
    for step in (0, 3):
        seen = [
            i for r in range(dp) for m in range(cfg.num_microbatches(dp)) for i in sample_indices(cfg, dp, r, step, m)
        ]
        assert sorted(seen) == list(range(step * 8, step * 8 + 8))


def megatron_flops(recipe, s: int, batch: int) -> float:
    """Megatron-LM's num_floating_point_operations (GQA, SwiGLU), with the causal halving."""
    a = recipe.architecture
    h, L, n, g = a.hidden_size, a.num_layers, a.num_attention_heads, a.num_query_groups
    q_ratio = a.head_dim * n / h
    return (
        12
        * batch
        * s
        * L
        * h
        * h
        * ((1 + g / n + s / h / 2) * q_ratio + (a.ffn_hidden_size / h) * 1.5 + a.padded_vocab_size(1) / (2 * L * h))
    )


@pytest.mark.parametrize("model", ["qwen25-7b", "tiny"])
def test_flops_match_megatrons_formula(model):
    recipe = load_recipe(model)
    assert flops_per_step(recipe, 4096, 64) == pytest.approx(megatron_flops(recipe, 4096, 64), rel=1e-12)


def test_qwen25_7b_flops_per_token_is_6n_plus_attention():
    # 6.53e9 non-embedding parameters + the 0.545e9 output layer: 6N ≈ 4.24e10 FLOPs/token,
    # plus causal attention at 4096 tokens: 6 × 28 layers × 3584 × 4096 ≈ 0.25e10.
    per_token = flops_per_step(load_recipe("qwen25-7b"), 4096, 1) / 4096
    assert per_token == pytest.approx(4.24e10 + 6 * 28 * 3584 * 4096, rel=0.01)


def test_mfu_uses_the_peak_of_the_device_and_cpu_reports_none():
    assert Accelerator("npu", 8, "Ascend910B2").peak_tflops == 376.0
    assert Accelerator("npu", 8, "Ascend910B1").peak_tflops == 414.0
    assert Accelerator("cuda", 8, "NVIDIA H100 80GB HBM3").peak_tflops == 989.0
    assert Accelerator("cuda", 1, "NVIDIA H100 PCIe").peak_tflops == 756.0
    assert Accelerator("cuda", 1, "NVIDIA H200").peak_tflops == 989.0
    assert Accelerator("cpu", 0, "cpu").peak_tflops is None
    assert Accelerator("cpu", 0, "cpu").backend == "gloo" and Accelerator("npu", 8, "Ascend910B3").backend == "hccl"
    m = step_metrics(
        7,
        2.5,
        1e-4,
        0.9,
        step_time_s=2.0,
        tokens_per_step=8192,
        flops=376e12 * 8,
        world_size=8,
        peak_tflops=376.0,
        consumed_samples=14,
    )
    assert m.mfu == pytest.approx(0.5) and m.tokens_per_s_per_device == pytest.approx(512)
    assert "MFU 50.0%" in format_line(m, 10)
    cpu = step_metrics(7, 2.5, 1e-4, 0.9, 2.0, 8192, 1e12, 1, None, 14)
    assert cpu.mfu is None and "MFU n/a" in format_line(cpu, 10)


def test_keep_last_prunes_older_iterations(tmp_path):
    from llm.pretrain.mcore.training_state import prune

    for i in (5, 10, 15, 20):
        (tmp_path / f"iter_{i:07d}").mkdir()
    prune(tmp_path, keep_last=2, keep=20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_0000015", "iter_0000020"]


KILL_DURING_SECOND_SAVE = """
import os, signal, sys, torch
real_save = torch.save
def save(obj, f, *a, **k):
    if "iter_0000004" in str(f):  # the second checkpoint: write half a file, then die
        with open(f, "wb") as out:
            out.write(b"PK" + b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **k)
torch.save = save
from llm.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path):
    from llm import checkpoint

    write_dataset(tmp_path / "data" / MODEL / "sample_text_document", count=30)
    save = tmp_path / "ckpt"
    argv = [
        "pretrain",
        "--model",
        MODEL,
        *TRAIN_FLAGS,
        "--train-iters",
        "6",
        "--save-interval",
        "2",
        "--save",
        str(save),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SECOND_SAVE, *argv],
        cwd=REPO,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert checkpoint.read_latest(save) == 2
    half_written = save / "iter_0000004" / "mp_rank_00"
    assert not (half_written / "model_optim_rng.pt").exists()
    # The kill hit mid-write (distrib_optim.pt, the distributed optimizer's file, is written first).
    assert [p.name.startswith((".model_optim_rng.pt.", ".distrib_optim.pt.")) for p in half_written.iterdir()] == [True]
    assert checkpoint.find_layout(save, 2) == (1, 1)
    state = checkpoint.load_rank(save, 2, 0, 0, 1)
    assert state["iteration"] == 2 and {"model", "optimizer", "opt_param_scheduler", "rng_state", "args"} <= set(state)
    # pretrain's own reader takes it as an exact resume point.
    from llm.distributed import DistInfo
    from llm.pretrain.mcore import training_state

    cfg = parse_config([*argv[1:], "--load", str(save)], Workspace(tmp_path))
    loaded = training_state.read(cfg.load, cfg, DistInfo(0, 1, 0, 1, 1, 1, 0, 0, 0))
    assert loaded.resumable and loaded.iteration == 2
