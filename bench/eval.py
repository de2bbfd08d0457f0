"""`python -m llm eval` against lm-evaluation-harness on the same files and the same weights.

For each task (MMLU, C-Eval, BoolQ formats; our own small sets from llm/eval/sample_sets.py) it
writes an equivalent local lm-eval task definition (YAML: ``dataset_path: csv`` / ``json`` with
``data_files``, ``doc_to_text``, ``doc_to_choice``, ``output_type: multiple_choice``, first-n
few-shot from the dev split), runs lm-eval (``lm_eval.simple_evaluate`` with its ``hf`` model)
and ours at the same batch size, and prints both accuracies, whether every prediction and every
prompt is the same, and the speed ratio (target: equal accuracy, ours >= 2x faster).

This script installs nothing. Make the bench venv once (lm-eval from the package index, the same
torch and transformers as the image):

    python3 -m venv /tmp/lmeval
    /tmp/lmeval/bin/pip install "lm-eval[hf]" torch==2.13.0 transformers==5.23.0

then, with the tiny model's HF weights in the workspace (`python -m llm sample`, or after
`--phase all`) or any HF directory:

    python bench/eval.py --lm-eval-python /tmp/lmeval/bin/python [--hf-dir DIR] [--batch-size 8]

Times are wall-clock seconds: "process" is the whole command (imports, model load, data, scoring);
"eval" leaves out imports and the model load (lm-eval: task loading + simple_evaluate with a
loaded HFLM; ours: reading the data + prompts + scoring).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llm.eval import data as eval_data  # noqa: E402
from llm.eval import prompts, sample_sets  # noqa: E402

TASKS = ("mmlu", "ceval", "boolq")
SHOTS = {"mmlu": 5, "ceval": 5, "boolq": 0}

# Run inside the lm-eval venv: load the model once, evaluate, dump accuracies, predictions, prompts.
LM_EVAL_SCRIPT = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
t1 = time.perf_counter()
lm = HFLM(pretrained=cfg["hf_dir"], dtype="float32", batch_size=cfg["batch_size"], device="cpu")
t2 = time.perf_counter()
res = lm_eval.simple_evaluate(model=lm, tasks=cfg["tasks"], task_manager=TaskManager(include_path=cfg["task_dir"]),
                              log_samples=True, batch_size=cfg["batch_size"], device="cpu")
t3 = time.perf_counter()

def context(sample):
    args = sample["arguments"][0]
    return args[0] if isinstance(args, (list, tuple)) else args["arg_0"]

out = {"import_s": t1 - t0, "load_s": t2 - t1, "eval_s": t3 - t2, "tasks": {}}
for name in cfg["tasks"]:
    samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
    scores = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    out["tasks"][name] = {
        "acc": res["results"][name]["acc,none"],
        "predictions": [max(range(len(s)), key=lambda i: (s[i], -i)) for s in scores],
        "targets": [int(s["target"]) for s in samples],
        "contexts": [context(s) for s in samples],
    }
json.dump(out, open(cfg["out"], "w"))
"""


def lm_eval_tasks(task: str, data: Path, eval_set: eval_data.EvalSet, task_dir: Path) -> dict[str, str]:
    """Write one lm-eval YAML per subject; returns lm-eval task name -> subject."""
    names = {}
    task_dir.mkdir(parents=True, exist_ok=True)
    letters = list(eval_data.LETTERS)
    for subject in eval_set.test:
        name = f"npubox_{task}_{subject}"
        config = {"task": name, "output_type": "multiple_choice", "num_fewshot": SHOTS[task],
                  "target_delimiter": " ", "fewshot_delimiter": "\n\n",
                  "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}  # fmt: skip
        if task == "boolq":
            config |= {
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"validation": str(data / "dev.jsonl"), "train": str(data / "train.jsonl")}},
                "test_split": "validation",
                "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:",
                "doc_to_choice": ["no", "yes"],
                "doc_to_target": "{{1 if answer else 0}}",
            }
        else:
            split, columns = ("test", ["question", "A", "B", "C", "D", "answer"]) if task == "mmlu" else ("val", None)
            answer_word = "Answer:" if task == "mmlu" else "答案："
            config |= {
                "dataset_path": "csv",
                "dataset_kwargs": {
                    "data_files": {split: str(data / split / f"{subject}_{split}.csv"), "dev": str(data / "dev" / f"{subject}_dev.csv")},
                    # MMLU files have no header; C-Eval's dev files add an explanation column
                    **({"column_names": columns} if columns else {"usecols": ["question", "A", "B", "C", "D", "answer"]}),
                    # keep "None", "NA", ... as text
                    "keep_default_na": False,
                },
                "test_split": split,
                "fewshot_split": "dev",
                "fewshot_config": {"sampler": "first_n"},
                "description": prompts.header(task, subject),
                "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n" + answer_word,
                "doc_to_choice": letters,
                "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer.strip())}}",
            }
        (task_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
        names[name] = subject
    return names


def run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd[:4])} ...\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from llm.workspace import Workspace

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm-eval-python", required=True, help="python of the venv with lm-eval installed (see the docstring)")
    p.add_argument("--hf-dir", type=Path, help="HF weights + tokenizer (default: <workspace>/models/tiny/hf)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--repeats", type=int, default=1, help="run each side this many times (alternating); report the fastest")
    args = p.parse_args(argv)
    hf_dir = args.hf_dir or Workspace.from_env().hf_dir("tiny")
    if not (hf_dir / "config.json").is_file():
        sys.exit(f"{hf_dir}: no HF model there; run `python -m llm sample` first or pass --hf-dir")

    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    data_root = work / "data"
    sample_sets.write_sample_sets(data_root)
    env = {**os.environ, "HF_HOME": str(work / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}  # fmt: skip
    print(f"weights {hf_dir}, batch size {args.batch_size}, fastest of {args.repeats}, work dir {work}")
    rows = []
    for task in args.tasks.split(","):
        data = data_root / task
        eval_set = eval_data.load_eval_set(task, data, SHOTS[task])
        names = lm_eval_tasks(task, data, eval_set, work / "lm-eval-tasks" / task)

        theirs_json = work / f"lm-eval-{task}.json"
        cfg = {"hf_dir": str(hf_dir), "batch_size": args.batch_size, "tasks": list(names),
               "task_dir": str(work / "lm-eval-tasks" / task), "out": str(theirs_json)}  # fmt: skip
        ours_json = work / f"ours-{task}.json"
        ours_cmd = [sys.executable, "-m", "llm", "eval", "--task", task, "--data-path", str(data), "--hf-dir", str(hf_dir),
                    "--shots", str(SHOTS[task]), "--batch-size", str(args.batch_size), "--output", str(ours_json), "--quiet"]  # fmt: skip
        theirs_wall = ours_wall = float("inf")
        theirs_eval = ours_eval = float("inf")
        for _ in range(args.repeats):
            theirs_wall = min(theirs_wall, run([args.lm_eval_python, "-c", LM_EVAL_SCRIPT, json.dumps(cfg)], env))
            theirs = json.loads(theirs_json.read_text())
            theirs_eval = min(theirs_eval, theirs["eval_s"])
            ours_wall = min(ours_wall, run(ours_cmd, env))
            ours = json.loads(ours_json.read_text())
            ours_eval = min(ours_eval, ours["timing"]["read_s"] + ours["timing"]["score_s"])

        same_pred = same_prompt = total = their_correct = 0
        ours_by_subject: dict[str, list[dict]] = {}
        for pred in ours["predictions"]:
            ours_by_subject.setdefault(pred["subject"], []).append(pred)
        for name, subject in names.items():
            t = theirs["tasks"][name]
            mine = ours_by_subject[subject]
            assert len(mine) == len(t["predictions"]), (name, len(mine), len(t["predictions"]))
            expected = [prompts.prompt(task, q, eval_set.shots[subject]) for q in eval_set.test[subject]]
            same_prompt += sum(a == b for a, b in zip(expected, t["contexts"]))
            same_pred += sum(m["prediction"] == tp for m, tp in zip(mine, t["predictions"]))
            their_correct += sum(tp == tt for tp, tt in zip(t["predictions"], t["targets"]))
            total += len(mine)
        rows.append((task, total, ours["accuracy"], their_correct / total, same_pred, same_prompt,
                     ours_wall, theirs_wall, ours_eval, theirs_eval))  # fmt: skip

    print()
    head = ("task", "n", "ours acc", "lm-eval acc", "same pred", "same prompt",
            "ours s", "lm-eval s", "speedup", "ours eval s", "lm-eval eval s", "eval speedup")  # fmt: skip
    print(" | ".join(head))
    for task, n, acc, their_acc, sp, spr, ow, tw, oe, te in rows:
        print(f"{task} | {n} | {100 * acc:.2f}% | {100 * their_acc:.2f}% | {sp}/{n} | {spr}/{n} | "
              f"{ow:.1f} | {tw:.1f} | {tw / ow:.2f}x | {oe:.2f} | {te:.2f} | {te / oe:.2f}x")  # fmt: skip
    ok = all(acc == their_acc and sp == n for _, n, acc, their_acc, sp, *_ in rows)
    print("accuracy equal on every task, every prediction the same" if ok else "MISMATCH between lm-eval and ours")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
