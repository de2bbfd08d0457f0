"""llm.checkpoint: Megatron's directory layout, atomic rank files, weights_only loading."""

from __future__ import annotations

import argparse

import pytest

from llm import checkpoint
from llm.errors import NpuboxError
from llm.recipes import load_recipe

torch = pytest.importorskip("torch")


def state(args=None):
    return {
        "model": {"w": torch.arange(4.0)},
        "checkpoint_version": checkpoint.CHECKPOINT_VERSION,
        "iteration": 7,
        "args": args or checkpoint.make_args(load_recipe("tiny"), tp=2, pp=2),
    }


def test_rank_dir_names_follow_megatron():
    assert checkpoint.rank_dir_name(0, 0, 1) == "mp_rank_00"
    assert checkpoint.rank_dir_name(3, 1, 2) == "mp_rank_03_001"
    assert checkpoint.iter_dir_name(1) == "iter_0000001"
    assert checkpoint.iter_dir_name("release") == "release"
    assert str(checkpoint.rank_file("ck", 12, 1, 0, 4)) == "ck/iter_0000012/mp_rank_01_000/model_optim_rng.pt"


def test_save_load_round_trip(tmp_path):
    for tp in range(2):
        for pp in range(2):
            checkpoint.save_rank(tmp_path, 7, tp, pp, 2, state())
    checkpoint.write_latest(tmp_path, 7)
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "7"
    assert checkpoint.read_latest(tmp_path) == 7
    assert checkpoint.find_layout(tmp_path, 7) == (2, 2)
    loaded = checkpoint.load_rank(tmp_path, 7, 1, 1, 2)
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))
    args = loaded["args"]
    assert isinstance(args, argparse.Namespace)  # what Megatron's load_args_from_checkpoint reads
    assert (args.num_layers, args.tensor_model_parallel_size, args.pipeline_model_parallel_size) == (4, 2, 2)
    assert (args.padded_vocab_size, args.num_query_groups, args.add_qkv_bias) == (2048, 2, True)
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind


def test_load_refuses_arbitrary_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = checkpoint.rank_file(tmp_path, 1, 0, 0, 1)
    path.parent.mkdir(parents=True)
    torch.save({"model": {}, "x": Evil()}, path)
    with pytest.raises(NpuboxError, match=r"cannot be loaded with torch.load\(weights_only=True\)"):
        checkpoint.load_rank(tmp_path, 1, 0, 0, 1)


def test_read_latest_errors(tmp_path):
    with pytest.raises(NpuboxError, match=r"latest_checkpointed_iteration.txt: not found"):
        checkpoint.read_latest(tmp_path)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("banana\n")
    with pytest.raises(NpuboxError, match=r"holds 'banana'; expected an iteration number or 'release'"):
        checkpoint.read_latest(tmp_path)
    checkpoint.write_latest(tmp_path, "release")
    assert checkpoint.read_latest(tmp_path) == "release"


def test_find_layout_reports_missing_ranks(tmp_path):
    for tp, pp in [(0, 0), (1, 0), (0, 1)]:
        checkpoint.save_rank(tmp_path, 1, tp, pp, 2, state())
    with pytest.raises(NpuboxError, match=r"rank files missing for mp_rank_01_001 \(checkpoint has tp=2, pp=2\)"):
        checkpoint.find_layout(tmp_path, 1)


def test_layers_per_stage():
    assert checkpoint.layers_per_stage(28, 4) == [7, 7, 7, 7]
    assert checkpoint.layers_per_stage(28, 4, [6, 8, 8, 6]) == [6, 8, 8, 6]
    with pytest.raises(NpuboxError, match=r"pipeline parallel size 3 does not divide num_layers=28"):
        checkpoint.layers_per_stage(28, 3)
    with pytest.raises(NpuboxError, match=r"--num-layer-list 6,8,8: expected 4 positive numbers"):
        checkpoint.layers_per_stage(28, 4, [6, 8, 8])
