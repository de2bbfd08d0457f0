"""The command line: defaults from --model, failures before any work, and a kill at any moment leaves no final file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _preprocess_fixtures import docstring_texts, tokenizer_dir, write_jsonl
from llm.errors import NpuboxError
from llm.preprocess import main

REPO = Path(__file__).resolve().parents[2]


def final_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


def test_help_explains_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "llm", "preprocess", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--input",
        "--tokenizer",
        "--output-prefix",
        "--handler",
        "--json-keys",
        "--append-eod",
        "--workers",
        "--seq-length",
        "--prompt-type",
        "--strict",
        "--model",
    ):
        assert flag in out


def test_model_fills_every_default_from_the_workspace(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(tokenizer_dir(), ws / "models" / "tiny" / "hf")
    write_jsonl(
        (ws / "data" / "raw").mkdir(parents=True) or ws / "data" / "raw" / "sample.jsonl",
        ({"text": t} for t in docstring_texts()[:50]),
    )
    monkeypatch.setenv("NPUBOX_WORKSPACE", str(ws))
    assert main(["--model", "tiny", "--quiet"]) == 0
    out = ws / "data" / "tiny"
    assert final_files(out) == ["sample_text_document.bin", "sample_text_document.idx"]
    assert "documents: 50" in capsys.readouterr().out
    # --append-eod is on with --model: every document ends with <|endoftext|> (id 0 in the sample tokenizer)
    import numpy as np

    ids = np.fromfile(out / "sample_text_document.bin", dtype=np.uint16)
    assert (ids == 0).sum() == 50 and ids[-1] == 0


def test_missing_required_options_without_model():
    with pytest.raises(NpuboxError, match="--input, --tokenizer, --output-prefix not given"):
        main([])


def test_tokenizer_directory_without_tokenizer_fails_before_work(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NpuboxError, match="has no tokenizer.json and transformers cannot load one"):
        main(
            [
                "--input",
                str(tmp_path / "a.jsonl"),
                "--tokenizer",
                str(tmp_path / "empty"),
                "--output-prefix",
                str(tmp_path / "out" / "x"),
            ]
        )
    assert not (tmp_path / "out").exists()


def test_unwritable_output_directory_fails_before_work(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NpuboxError, match="output directory .*a_file/sub cannot be created"):
        main(
            [
                "--input",
                str(tmp_path / "a.jsonl"),
                "--tokenizer",
                str(tokenizer_dir()),
                "--output-prefix",
                str(tmp_path / "a_file" / "sub" / "x"),
            ]
        )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_input_fails_before_work(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    path.chmod(0)
    with pytest.raises(NpuboxError, match="is not readable"):
        main(["--input", str(path), "--tokenizer", str(tokenizer_dir()), "--output-prefix", str(tmp_path / "x")])


def test_killed_run_leaves_no_final_file_and_rerun_succeeds(tmp_path):
    texts = docstring_texts()
    corpus = write_jsonl(tmp_path / "big.jsonl", ({"text": t} for _ in range(6) for t in texts))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "llm",
        "preprocess",
        "--input",
        str(corpus),
        "--tokenizer",
        str(tokenizer_dir()),
        "--output-prefix",
        str(out / "big"),
        "--workers",
        "1",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # wait until tokens are being written under the temporary name, then kill mid-run
        while not any(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in out.glob(".*")):
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert final_files(out) == []
    assert any(p.name.startswith(".big_text_document") for p in out.iterdir())  # the interrupted run's temporaries

    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "left by an interrupted run" in rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == ["big_text_document.bin", "big_text_document.idx"]
    assert f"documents: {6 * len(texts):,}" in rerun.stdout


def test_sigterm_removes_the_temporary_files_too(tmp_path):
    corpus = write_jsonl(tmp_path / "big.jsonl", ({"text": t} for _ in range(6) for t in docstring_texts()))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "llm",
        "preprocess",
        "--input",
        str(corpus),
        "--tokenizer",
        str(tokenizer_dir()),
        "--output-prefix",
        str(out / "big"),
        "--workers",
        "1",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in out.glob(".*")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGTERM)
    finally:
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(out.iterdir()) == []
