"""A FIFO or a device where a file should be is refused at once, naming the path and what it is (issue 19,
case 5): the checkpoint tracker, a rank file, a dataset `--input`. Every run is a child with a timeout, so a
regression fails in seconds instead of hanging the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from _preprocess_fixtures import tokenizer_dir

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def llm(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NPUBOX_WORKSPACE": str(workspace), "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    try:
        return subprocess.run(
            [sys.executable, "-m", "llm", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`llm {' '.join(args)}` still ran after {TIMEOUT} s: it blocked on a special file")


def megatron_dir(root: Path) -> Path:
    rank_dir = root / "iter_0000001" / "mp_rank_00"
    rank_dir.mkdir(parents=True)
    return root


def test_a_fifo_tracker_is_refused(tmp_path):
    load = megatron_dir(tmp_path / "ckpt")
    os.mkfifo(load / "latest_checkpointed_iteration.txt")
    proc = llm(tmp_path, "convert", "--model", "tiny", "--from", "mcore", "--to", "hf", "--load-dir", str(load))
    assert proc.returncode != 0
    assert f"{load}/latest_checkpointed_iteration.txt: is a FIFO (named pipe), not a regular file" in proc.stderr


def test_a_fifo_rank_file_is_refused_not_reported_missing(tmp_path):
    load = megatron_dir(tmp_path / "ckpt")
    (load / "latest_checkpointed_iteration.txt").write_text("1")
    rank = load / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    os.mkfifo(rank)
    proc = llm(tmp_path, "convert", "--model", "tiny", "--from", "mcore", "--to", "hf", "--load-dir", str(load))
    assert proc.returncode != 0
    assert f"{rank}: is a FIFO (named pipe), not a regular file" in proc.stderr


def test_a_rank_file_linked_to_a_device_is_refused(tmp_path):
    load = megatron_dir(tmp_path / "ckpt")
    (load / "latest_checkpointed_iteration.txt").write_text("1")
    rank = load / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    rank.symlink_to("/dev/zero")
    proc = llm(tmp_path, "convert", "--model", "tiny", "--from", "mcore", "--to", "hf", "--load-dir", str(load))
    assert proc.returncode != 0
    assert f"{rank}: is a character device, not a regular file" in proc.stderr


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_preprocess_input_that_is_not_a_file_is_refused(tmp_path, kind):
    data = tmp_path / "corpus.jsonl"
    if kind == "device":
        data.symlink_to("/dev/zero")
    else:
        os.mkfifo(data)
    out = tmp_path / "data" / "tiny" / "sample"
    proc = llm(
        tmp_path,
        "preprocess",
        "--model",
        "tiny",
        "--input",
        str(data),
        "--tokenizer",
        str(tokenizer_dir()),
        "--output-prefix",
        str(out),
    )
    assert proc.returncode != 0
    what = "a character device" if kind == "device" else "a FIFO (named pipe)"
    assert f"{data}: is {what}, not a regular file; expected a dataset file" in proc.stderr
    assert not out.parent.exists() or not list(out.parent.iterdir())  # nothing written
