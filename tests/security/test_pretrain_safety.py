"""Pretrain's outputs: one run per --save (issue 19, case 4)."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import time
from pathlib import Path

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


def wait_for_steps(metrics: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and '"loss"' in metrics.read_text():
            return
        time.sleep(0.2)
    proc.kill()  # the process this test started
    pytest.fail(f"no training step logged in {metrics} within {timeout} s (exit {proc.poll()})")


def test_sigterm_saves_a_checkpoint_of_the_step_it_finished_then_stops(tmp_path):
    """Issue 19, case 6: what `docker stop` / torchrun send. The run saves the iteration it finished, says so, and
    exits 143 (the run did not finish); a resume from it goes on."""
    ws = make_workspace(tmp_path / "ws")
    save = ws / "checkpoints" / "tiny" / "sigterm"
    metrics = ws / "logs" / "sigterm.jsonl"
    argv = llm_argv(
        "pretrain", "--model", "tiny", *TRAIN_FLAGS, "--train-iters", "100000", "--save", str(save),
        "--metrics", str(metrics),
    )  # fmt: skip
    proc = subprocess.Popen(argv, env=env_for(ws), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_steps(metrics, proc, timeout=240)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    saved = int((save / "latest_checkpointed_iteration.txt").read_text())
    assert 1 <= saved < 100000
    assert f"stopping at iteration {saved}: SIGTERM received; iteration {saved} is saved in {save}" in out + err
    resumed = subprocess.run(
        llm_argv(
            "pretrain",
            "--model",
            "tiny",
            *TRAIN_FLAGS,
            "--train-iters",
            str(saved + 2),
            "--load",
            str(save),
            "--save",
            str(save),
            "--metrics",
            str(metrics),
        ),  # fmt: skip
        env=env_for(ws),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {saved}" in resumed.stdout + resumed.stderr
    assert int((save / "latest_checkpointed_iteration.txt").read_text()) == saved + 2
