"""Our per-choice log-likelihoods against lm-evaluation-harness 0.4.13's *built-in* task definitions
(mmlu/default, ceval/ceval-valid, super_glue/boolq, included by path, only the data source pointed
at local copies of the sample sets) on the same weights: every prompt the same text, every choice's
log-likelihood within 1e-5, the same predictions and accuracy. The comparison is bench/eval.py's.

lm-eval lives in its own venv over this interpreter's packages (bench/lm_eval_harness.py), made
once with this machine's pip configuration; the tests are skipped, saying why, only where it is not
installed and cannot be installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llm.__main__ import main as llm_main
from llm.eval import prompts, sample_sets
from llm.eval.data import load_eval_set

pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import lm_eval_harness as harness  # noqa: E402

SHOTS = {"mmlu": 5, "ceval": 5, "boolq": 0}


@pytest.fixture(scope="module")
def lm_eval_python() -> Path:
    try:
        return harness.ensure_venv(log=lambda msg: print(msg, file=sys.stderr))
    except harness.LmEvalUnavailable as e:
        pytest.skip(f"lm-eval is not installed: {e}")


@pytest.fixture(scope="module")
def both_sides(lm_eval_python, tmp_path_factory):
    """The tiny model scored by lm-eval (one process, all three tasks) and by `python -m llm eval`."""
    from _eval_tiny_model import build_tiny_hf

    root = tmp_path_factory.mktemp("parity")
    hf = build_tiny_hf(root / "hf")
    data = sample_sets.write_sample_sets(root / "eval")
    env = harness.isolated_env(root, REPO)
    specs = {t: {"data": str(data[t]), "shots": SHOTS[t]} for t in SHOTS}
    work = root / "lm-eval"
    work.mkdir()
    harness.runner(lm_eval_python, "prepare", {"work": str(work), "tasks": specs}, env)
    out = root / "lm-eval.json"
    harness.runner(
        lm_eval_python,
        "run",
        {"work": str(work), "hf_dir": str(hf), "batch_size": 4, "device": "cpu", "tasks": specs, "out": str(out)},
        env,
    )
    ours = {}
    for task in SHOTS:
        path = root / f"ours-{task}.json"
        assert (
            llm_main(
                [
                    "eval",
                    "--task",
                    task,
                    "--data-path",
                    str(data[task]),
                    "--hf-dir",
                    str(hf),
                    "--shots",
                    str(SHOTS[task]),
                    "--batch-size",
                    "4",
                    "--output",
                    str(path),
                    "--quiet",
                ]
            )
            == 0
        )
        ours[task] = json.loads(path.read_text())
    return data, ours, json.loads(out.read_text())["tasks"]


@pytest.mark.slow
@pytest.mark.parametrize("task, n", [("mmlu", 85), ("ceval", 50), ("boolq", 35)])
def test_log_likelihoods_equal_lm_eval_built_in_tasks(both_sides, task, n):
    data, ours, theirs = both_sides
    eval_set = load_eval_set(task, data[task], SHOTS[task])
    our_prompts = {s: [prompts.prompt(task, q, eval_set.shots[s]) for q in qs] for s, qs in eval_set.test.items()}
    c = harness.compare(ours[task], theirs[task], our_prompts)
    assert (c.n, c.same_answer, c.same_prompt, c.same_prediction) == (n, n, n, n)
    assert c.max_delta <= 1e-5, c.max_delta
    assert c.ours_correct == c.their_correct
    # the comparison can fail: one nudged log-likelihood shows up
    subject = next(iter(theirs[task]))
    theirs[task][subject]["logprobs"][0][0] += 1e-3
    try:
        assert harness.compare(ours[task], theirs[task], our_prompts).max_delta > 1e-5
    finally:
        theirs[task][subject]["logprobs"][0][0] -= 1e-3


def test_headers_equal_lm_eval_for_every_subject(lm_eval_python):
    """All 57 MMLU and 52 C-Eval subjects, not only the sample sets' ones."""
    where = subprocess.run(
        [str(lm_eval_python), "-c", "import lm_eval.tasks as t, os; print(os.path.dirname(t.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tasks = Path(where)
    for task, pattern, count in (("mmlu", "mmlu/default/mmlu_*.yaml", 57), ("ceval", "ceval/ceval-valid_*.yaml", 52)):
        files = sorted(tasks.glob(pattern))
        assert len(files) == count
        for f in files:
            cfg = yaml.safe_load(f.read_text(encoding="utf-8"))
            assert prompts.header(task, cfg["dataset_name"]) == cfg["description"], f
