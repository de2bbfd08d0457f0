"""Pretrain's outputs: one run per --save (issue 19, case 4)."""

from __future__ import annotations

import fcntl
import subprocess

import pytest

from _pretrain_fixtures import TRAIN_FLAGS, env_for, llm_argv, make_workspace
from llm.errors import NpuboxError
from llm.target_lock import save_lock


def test_a_second_pretrain_into_the_same_save_is_refused_before_it_writes(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    save = ws / "checkpoints" / "tiny" / "pretrain"
    save.parent.mkdir(parents=True, exist_ok=True)
    with open(save.parent / ".pretrain.lock", "a+") as held:  # what the first run holds (llm.target_lock)
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.run(
            llm_argv("pretrain", "--model", "tiny", *TRAIN_FLAGS, "--train-iters", "4", "--save", str(save)),
            env=env_for(ws),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode != 0
    assert f"--save {save}: another run is writing it right now" in proc.stderr
    assert not save.exists()  # not one iteration of the first run's was replaced


def test_only_the_first_process_of_a_run_holds_save(tmp_path):
    save = str(tmp_path / "ckpt")
    with save_lock(save, first_process=True):
        assert (tmp_path / ".ckpt.lock").exists()
        with pytest.raises(NpuboxError, match="another run is writing it right now"):
            with save_lock(save, first_process=True):
                pass
        with save_lock(save, first_process=False):  # the other ranks / nodes of the same run
            pass
    assert not (tmp_path / ".ckpt.lock").exists()
