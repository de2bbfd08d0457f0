"""`python -m llm convert` never deletes what it did not write: not unrelated files in --save-dir, not a
trained checkpoint (without --overwrite), not the model it converts; a full disk, a killed run and a
second convert of the same target are each one sentence, and nothing half-written stays behind."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from _convert_fixtures import make_hf
from llm import checkpoint
from llm.convert import main as convert
from llm.errors import NpuboxError
from llm.recipes import load_recipe

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return make_hf(tmp_path_factory.mktemp("hf"), "tiny")


@pytest.fixture
def hf(tiny_hf, tmp_path):
    out = tmp_path / "models" / "hf"
    shutil.copytree(tiny_hf, out)
    return out


def to_mcore(hf, out, *extra):
    return convert(["--model", "tiny", "--load-dir", str(hf), "--save-dir", str(out), *extra])


def files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def leftovers(parent, name="out"):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def trained_checkpoint(folder, iteration=100):
    """What pretrain saves: weights plus optimizer and scheduler state, at iteration 100."""
    recipe = load_recipe("tiny")
    state = {
        "model": {"decoder.final_layernorm.weight": torch.ones(4)},
        "iteration": iteration,
        "args": checkpoint.make_args(recipe, tp=1, pp=1, iteration=iteration),
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": []},
        "opt_param_scheduler": {"num_steps": iteration},
        "checkpoint_version": 3.0,
    }
    checkpoint.save_rank(folder, iteration, 0, 0, 1, state)
    checkpoint.write_latest(folder, iteration)
    return folder


def test_a_save_dir_of_unrelated_files_is_refused_and_kept(hf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("three years of work")
    (out / "data.csv").write_text("1,2,3")
    with pytest.raises(NpuboxError) as info:
        to_mcore(hf, out)
    assert str(info.value) == (
        f"--save-dir {out} holds other files (data.csv, thesis.tex), not a Megatron checkpoint "
        "(latest_checkpointed_iteration.txt); convert replaces only a checkpoint of the kind it writes: "
        "choose a new or empty --save-dir"
    )
    assert files(out) == {"thesis.tex": b"three years of work", "data.csv": b"1,2,3"}
    # ... also with --overwrite, and for an HF target
    with pytest.raises(NpuboxError, match="holds other files"):
        to_mcore(hf, out, "--overwrite")
    mcore = tmp_path / "mcore"
    assert to_mcore(hf, mcore) == 0
    with pytest.raises(NpuboxError, match=r"not a Hugging Face checkpoint \(config.json and \*.safetensors\)"):
        convert(["--model", "tiny", "--from", "mcore", "--to", "hf", "--load-dir", str(mcore), "--save-dir", str(out)])
    assert len(files(out)) == 2 and leftovers(tmp_path) == []


def test_a_trained_checkpoint_is_replaced_only_with_overwrite(hf, tmp_path, capsys):
    out = trained_checkpoint(tmp_path / "out")
    before = files(out)
    with pytest.raises(NpuboxError) as info:
        to_mcore(hf, out)
    assert str(info.value) == (
        f"--save-dir {out} already holds a trained checkpoint (iteration 100, with optimizer state), which "
        "replacing it would lose; pass --overwrite to replace it, or choose another --save-dir"
    )
    assert files(out) == before
    assert to_mcore(hf, out, "--overwrite") == 0
    assert (
        f"--overwrite: {out} holds a trained checkpoint (iteration 100, with optimizer state); it is replaced "
        "once the new one is complete"
    ) in capsys.readouterr().err
    assert checkpoint.read_latest(out) == 1 and leftovers(tmp_path) == []


def test_an_existing_checkpoint_needs_overwrite_and_is_then_replaced_whole(hf, tmp_path):
    out = tmp_path / "out"
    assert to_mcore(hf, out, "--tp", "1") == 0
    before = files(out)
    with pytest.raises(NpuboxError, match=r"already holds a Megatron checkpoint .*; pass --overwrite to replace it"):
        to_mcore(hf, out, "--tp", "2")
    assert files(out) == before
    assert to_mcore(hf, out, "--tp", "2", "--overwrite") == 0
    assert sorted(p.name for p in (out / "iter_0000001").iterdir()) == ["mp_rank_00", "mp_rank_01"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["models", ".", "models/hf"])
def test_a_save_dir_that_is_or_contains_the_load_dir_is_refused(hf, tmp_path, target):
    before = files(hf)
    save = (tmp_path / target).resolve()
    with pytest.raises(NpuboxError) as info:
        to_mcore(hf, save)
    assert f"the --load-dir {hf}: replacing it would delete the model being converted" in str(info.value)
    assert files(hf) == before
    with pytest.raises(NpuboxError, match="replacing it would delete the model being converted"):
        to_mcore(hf, save, "--overwrite")  # not even with --overwrite


def test_tp_or_pp_zero_is_refused(hf, tmp_path):
    for flag in ("--tp", "--pp"):
        with pytest.raises(NpuboxError, match=rf"^{flag} 0: expected 1 or more$"):
            to_mcore(hf, tmp_path / "out", flag, "0")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_full_disk_is_one_sentence_and_leaves_nothing(hf, tmp_path, monkeypatch):
    real_save = torch.save

    def save_then_run_out_of_space(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # a partial checkpoint exists when the disk fills up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_then_run_out_of_space)
    with pytest.raises(NpuboxError) as info:
        to_mcore(hf, tmp_path / "out")
    message = str(info.value)
    assert message.startswith(f"no space left on {tmp_path} while writing {tmp_path / 'out'}")
    assert message.endswith("free some space or choose another --save-dir; the partial copy was removed")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_full_disk_reported_as_torchs_own_error_is_recognised(hf, tmp_path, monkeypatch):
    # A real full disk makes torch.save raise "RuntimeError: [enforce fail at inline_container.cc] ... unexpected
    # pos"; the free space left is what tells it apart from a bug.
    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(NpuboxError, match=rf"^no space left on {tmp_path} while writing"):
        to_mcore(hf, tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_what_a_killed_convert_left_is_removed_by_the_next_run(hf, tmp_path, capsys):
    stale_tmp = tmp_path / ".out.npubox-k3x9q2ab.tmp"
    stale_old = tmp_path / ".out.npubox-old-4242"
    for stale in (stale_tmp, stale_old):
        (stale / "iter_0000001" / "mp_rank_00").mkdir(parents=True)
        (stale / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt").write_bytes(b"half")
    unrelated = tmp_path / ".outer.npubox-k3x9q2ab.tmp"  # another target's: not ours to remove
    unrelated.mkdir()
    assert to_mcore(hf, tmp_path / "out") == 0
    assert not stale_tmp.exists() and not stale_old.exists() and unrelated.is_dir()
    err = capsys.readouterr().err
    assert f"removing {stale_tmp} (left by an interrupted convert)" in err
    assert leftovers(tmp_path) == []


def test_a_users_folder_that_only_looks_like_a_leftover_is_kept(hf, tmp_path, capsys):
    # Issue 19, case 3: only names of the exact shape llm.atomic makes (npubox's marker, 8 random characters) go.
    kept = [tmp_path / ".out.my_backup.tmp", tmp_path / ".out.old-thesis", tmp_path / ".out.npubox-too-long-part.tmp"]
    for folder in kept:
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    assert to_mcore(hf, tmp_path / "out") == 0
    assert all((folder / "notes.txt").read_text() == "mine" for folder in kept)
    assert "removing" not in capsys.readouterr().err


def test_a_second_convert_of_the_same_target_is_refused_while_the_first_runs(hf, tmp_path):
    import fcntl

    out = tmp_path / "out"
    live = tmp_path / ".out.npubox-a1b2c3d4.tmp"  # the running convert's temporary folder
    live.mkdir()
    with open(tmp_path / ".out.lock", "w") as held:  # the running convert's lock (llm.target_lock)
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(NpuboxError, match=rf"--save-dir {out}: another run is writing it right now"):
            to_mcore(hf, out)
        assert live.is_dir()  # its work is left alone
    assert to_mcore(hf, out) == 0  # once it is done
