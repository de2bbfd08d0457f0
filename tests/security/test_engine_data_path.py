"""Issue 19's rough edges of the mindspeed-llm engine's dataset: `--data-path` passed through to pretrain_gpt.py
after `--` gets the check the same flag gets before it (one check of the flag pretrain_gpt.py is given), and a dry
run prints the plan and says what is missing instead of refusing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from _mindspeed_fixtures import V200, launch_ns, workspace_for
from _pretrain_fixtures import REPO, env_for, write_dataset
from llm.errors import NpuboxError
from llm.pretrain.mindspeed_llm.run import make_plan

MODEL = "qwen25-7b"


def plan(ws, *argv: str):
    return make_plan(["--model", MODEL, "--stack", V200, *argv], launch_ns(1, 0), devices=8, workspace=ws)[0]


def truncated(prefix):
    with open(f"{prefix}.bin", "r+b") as f:
        f.truncate(3)
    return prefix


@pytest.mark.parametrize("where", ["before --", "after --"])
def test_a_missing_data_path_is_refused_on_either_side_of_the_dashes(tmp_path, where):
    ws = workspace_for(tmp_path, MODEL, 4, 2)
    nowhere = tmp_path / "nowhere" / "corpus_text_document"
    flag = ["--data-path", str(nowhere)]
    with pytest.raises(NpuboxError) as info:
        plan(ws, *(flag if where == "before --" else ["--", *flag]))
    assert str(info.value) == (
        f"--data-path {nowhere}: {nowhere}.bin/.idx not found; expected a Megatron indexed dataset "
        f"(make one with `python -m llm preprocess --model {MODEL}`)"
    )


@pytest.mark.parametrize("where", ["before --", "after --"])
def test_a_truncated_data_path_is_refused_on_either_side_of_the_dashes(tmp_path, where):
    ws = workspace_for(tmp_path, MODEL, 4, 2)
    prefix = truncated(write_dataset(tmp_path / "other" / "x_text_document", count=2))
    flag = ["--data-path", str(prefix)]
    with pytest.raises(NpuboxError, match=rf"^{prefix}\.bin: 3 bytes, shorter than the"):
        plan(ws, *(flag if where == "before --" else ["--", *flag]))


def test_a_passed_through_blend_is_checked_prefix_by_prefix(tmp_path):
    ws = workspace_for(tmp_path, MODEL, 4, 2)
    good = write_dataset(tmp_path / "a" / "a_text_document", count=2)
    bad = tmp_path / "b" / "b_text_document"
    with pytest.raises(NpuboxError, match=rf"^--data-path {bad}: {bad}\.bin/\.idx not found"):
        plan(ws, "--", "--data-path", "0.3", str(good), "0.7", str(bad))
    blend = plan(ws, "--", "--data-path", "0.3", str(good), "0.7", str(good))
    assert blend.composed.flags["--data-path"] == ("0.3", str(good), "0.7", str(good))


def test_a_passed_through_data_path_is_what_is_checked_not_the_workspace_default(tmp_path):
    """The workspace's own dataset may be absent when the run names another after --."""
    ws = workspace_for(tmp_path, MODEL, 4, 2)
    for suffix in (".bin", ".idx"):
        ws.text_dataset(MODEL).with_suffix(suffix).unlink()
    other = write_dataset(tmp_path / "other" / "x_text_document", count=2)
    composed = plan(ws, "--", "--data-path", str(other)).composed
    assert composed.flags["--data-path"] == (str(other),)
    assert composed.argv.count("--data-path") == 1


@pytest.mark.parametrize("launch", [(), ("launch", "--nproc", "8")], ids=["pretrain", "launch pretrain"])
def test_a_dry_run_prints_the_plan_and_says_the_dataset_is_missing(tmp_path, launch):
    """`python -m llm pretrain --engine mindspeed-llm --dry-run` (alone or under `llm launch`) with no dataset."""
    ws = workspace_for(tmp_path, MODEL, 4, 2)
    dataset = ws.text_dataset(MODEL)
    for suffix in (".bin", ".idx"):
        dataset.with_suffix(suffix).unlink()
    argv = [sys.executable, "-m", "llm", *launch, "pretrain", "--engine", "mindspeed-llm", "--model", MODEL]
    argv += [
        "--stack",
        V200,
        "--source-dir",
        "/src/MindSpeed-LLM",
        "--tp",
        "1",
        "--pp",
        "1",
        "--global-batch-size",
        "8",
    ]
    env = env_for(tmp_path, NPUBOX_DEVICE="cpu")
    out = subprocess.run([*argv, "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert f"    --data-path {dataset} \\" in lines  # the plan, whole
    assert "  /src/MindSpeed-LLM/pretrain_gpt.py \\" in lines
    said = (
        f"--data-path {dataset}: {dataset}.bin/.idx not found; expected a Megatron indexed dataset "
        f"(make one with `python -m llm preprocess --model {MODEL}`)"
    )
    assert lines[-1] == f"missing: {said}"
    run = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and run.stderr.strip().splitlines()[-1] == f"error: {said}", run.stderr
