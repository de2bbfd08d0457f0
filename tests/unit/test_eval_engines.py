"""Acceptance 2: the megatron-core engine (TP1, and TP2 under `python -m llm launch`, gloo on CPU)
and the transformers engine give the same prediction for every question on the same weights.

The Megatron checkpoints are made from the HF weights by `python -m llm convert`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llm.eval import sample_sets

pytest.importorskip("megatron.core")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from _eval_tiny_model import build_tiny_hf
    from llm.convert import main as convert

    root = tmp_path_factory.mktemp("engines")
    hf = build_tiny_hf(root / "hf")
    sample_sets.write_sample_sets(root / "eval")
    mcore = {}
    for tp in (1, 2):
        mcore[tp] = root / f"mcore_tp{tp}"
        assert (
            convert(
                [
                    "--model",
                    "tiny",
                    "--from",
                    "hf",
                    "--load-dir",
                    str(hf),
                    "--save-dir",
                    str(mcore[tp]),
                    "--tp",
                    str(tp),
                    "--pp",
                    "1",
                ]
            )
            == 0
        )
    return root, hf, mcore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_eval(args: list[str], nproc: int = 1) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "llm", "eval", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "llm",
            "launch",
            "--nproc",
            str(nproc),
            "--master-port",
            str(free_port()),
            "eval",
            *args,
        ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mmlu"])  # one task: the engines do not look at the task, and time is short
def test_megatron_tp1_tp2_and_transformers_agree(weights, task):
    root, hf, mcore = weights
    common = ["--task", task, "--data-path", str(root / "eval" / task), "--quiet", "--batch-size", "8"]
    if task == "mmlu":
        common += ["--shots", "2"]
    from llm.__main__ import main as llm_main

    assert llm_main(["eval", *common, "--hf-dir", str(hf), "--output", str(root / f"{task}_hf.json")]) == 0
    run_eval([*common, "--load", str(mcore[1]), "--tokenizer", str(hf), "--output", str(root / f"{task}_tp1.json")])
    run_eval(
        [*common, "--load", str(mcore[2]), "--tokenizer", str(hf), "--output", str(root / f"{task}_tp2.json")], nproc=2
    )

    results = {name: json.loads((root / f"{task}_{name}.json").read_text()) for name in ("hf", "tp1", "tp2")}
    assert results["tp2"]["checkpoint"]["engine"] == "megatron-core" and results["tp2"]["checkpoint"]["tp"] == 2
    hf_preds = results["hf"]["predictions"]
    assert len(hf_preds) == {"mmlu": 85, "boolq": 35}[task]
    for name in ("tp1", "tp2"):
        preds = results[name]["predictions"]
        assert [p["prediction"] for p in preds] == [p["prediction"] for p in hf_preds], name
        worst = max(abs(a - b) for p, q in zip(preds, hf_preds) for a, b in zip(p["logprobs"], q["logprobs"]))
        assert worst < 1e-4, (name, worst)
        assert results[name]["accuracy"] == results["hf"]["accuracy"]


def test_a_tp2_checkpoint_in_one_process_says_how_to_launch(weights, capsys, monkeypatch):
    from llm.__main__ import main as llm_main

    root, hf, mcore = weights
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rc = llm_main(
        [
            "eval",
            "--task",
            "boolq",
            "--data-path",
            str(root / "eval" / "boolq"),
            "--load",
            str(mcore[2]),
            "--tokenizer",
            str(hf),
        ]
    )
    assert rc == 1
    assert capsys.readouterr().err == (
        f"error: --load {mcore[2]}: checkpoint is split tp=2 but 1 process(es) run; "
        "start eval with `python -m llm launch --nproc 2 eval ...`\n"
    )
