"""lm-evaluation-harness's side of the eval comparison; runs with the lm-eval venv's Python.

    <lm-eval python> bench/lm_eval_runner.py prepare CONFIG.json
    <lm-eval python> bench/lm_eval_runner.py run CONFIG.json

``prepare`` turns our sample sets into local copies in the schema of the Hugging Face datasets
that lm-eval's built-in tasks read (cais/mmlu: question, subject, choices, answer index;
ceval/ceval-exam: id, question, A-D, answer letter, explanation; aps/super_glue boolq: question,
passage, idx, label), as JSON lines, and writes one task YAML per subject that *includes lm-eval's
own task file by path* (lm_eval/tasks/mmlu/default/mmlu_<subject>.yaml,
ceval/ceval-valid_<subject>.yaml, super_glue/boolq/default.yaml) and overrides only the task name
and the data source. Prompts, descriptions, choices, targets and few-shot sampling stay lm-eval's.

``run`` times what a user of lm-eval's Python API runs: import, ``HFLM`` (the model load), a
``TaskManager`` over those YAMLs only (``include_defaults=False``: no indexing of the ~14,700
built-in tasks) and ``simple_evaluate``; then dumps every context, every choice's
log-likelihood, predictions and targets.

Stdlib + lm-eval only: this file never imports ``llm``.

CONFIG (JSON): {"work": dir, "hf_dir": dir, "batch_size": int, "device": "cpu",
"tasks": {"mmlu": {"data": dir, "shots": 5}, ...}, "out": path (run only)}
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

LETTERS = ["A", "B", "C", "D"]
BUILT_IN = {
    "mmlu": "mmlu/default/mmlu_{subject}.yaml",
    "ceval": "ceval/ceval-valid_{subject}.yaml",
    "boolq": "super_glue/boolq/default.yaml",
}


def _jsonl(path: Path, docs: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def _read_csv(path: Path, header: bool) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        if header:
            return list(csv.DictReader(f))
        return [dict(zip(["question", "A", "B", "C", "D", "answer"], row)) for row in csv.reader(f) if row]


def _mmlu_docs(path: Path, subject: str) -> list[dict]:
    return [
        {
            "question": r["question"],
            "subject": subject,
            "choices": [r[x] for x in LETTERS],
            "answer": LETTERS.index(r["answer"].strip()),
        }
        for r in _read_csv(path, header=False)
    ]


def _ceval_docs(path: Path) -> list[dict]:
    keys = ["id", "question", *LETTERS, "answer", "explanation"]
    return [{k: r.get(k, "") for k in keys} for r in _read_csv(path, header=True)]


def _boolq_docs(path: Path) -> list[dict]:
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [
        {"question": d["question"], "passage": d["passage"], "idx": i, "label": int(d["answer"])}
        for i, d in enumerate(docs)
    ]


def task_definitions(task: str, data: Path, out: Path, tasks_dir: Path) -> dict[str, str]:
    """Write the local data copies and the YAMLs of one task; returns lm-eval task name -> our subject."""
    if task == "boolq":
        subjects = {
            "boolq": {
                "validation": _jsonl(out / "validation.jsonl", _boolq_docs(data / "dev.jsonl")),
                "train": _jsonl(out / "train.jsonl", _boolq_docs(data / "train.jsonl")),
            }
        }
    elif task == "mmlu":
        subjects = {
            p.name[: -len("_test.csv")]: {
                "test": _jsonl(out / p.name.replace(".csv", ".jsonl"), _mmlu_docs(p, p.name[: -len("_test.csv")])),
                "dev": _jsonl(
                    out / f"{p.name[: -len('_test.csv')]}_dev.jsonl",
                    _mmlu_docs(data / "dev" / p.name.replace("_test.csv", "_dev.csv"), p.name[: -len("_test.csv")]),
                ),
            }
            for p in sorted((data / "test").glob("*_test.csv"))
        }
    else:
        subjects = {
            p.name[: -len("_val.csv")]: {
                "val": _jsonl(out / p.name.replace(".csv", ".jsonl"), _ceval_docs(p)),
                "dev": _jsonl(
                    out / p.name.replace("_val.csv", "_dev.jsonl"),
                    _ceval_docs(data / "dev" / p.name.replace("_val", "_dev")),
                ),
            }
            for p in sorted((data / "val").glob("*_val.csv"))
        }

    import lm_eval.tasks

    built_in = Path(lm_eval.tasks.__file__).parent
    tasks_dir.mkdir(parents=True, exist_ok=True)
    names = {}
    for subject, files in subjects.items():
        included = built_in / BUILT_IN[task].format(subject=subject)
        if not included.is_file():
            sys.exit(f"{included}: lm-eval has no built-in task for {task} subject {subject!r}")
        name = f"npubox-{task}-{subject}"
        # JSON, not YAML syntax, so that no YAML library is needed here; JSON is YAML.
        config = {
            "include": str(included),
            "task": name,
            "task_alias": subject,
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files},
        }
        (tasks_dir / f"{name}.yaml").write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")
        names[name] = subject
    return names


def prepare(cfg: dict) -> None:
    work = Path(cfg["work"])
    index = {}
    for task, spec in cfg["tasks"].items():
        names = task_definitions(task, Path(spec["data"]), work / "data" / task, work / "tasks" / task)
        index[task] = names
    (work / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")


def _context(sample: dict) -> str:
    args = sample["arguments"]
    first = args[0] if isinstance(args, list) else next(iter(args.values()))
    return first[0] if isinstance(first, (list, tuple)) else first["arg_0"]


def run(cfg: dict) -> None:
    t0 = time.perf_counter()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t1 = time.perf_counter()
    lm = HFLM(pretrained=cfg["hf_dir"], dtype="float32", batch_size=cfg["batch_size"], device=cfg.get("device", "cpu"))
    t2 = time.perf_counter()
    work = Path(cfg["work"])
    index = json.loads((work / "index.json").read_text(encoding="utf-8"))
    out = {"import_s": t1 - t0, "load_s": t2 - t1, "eval_s": 0.0, "tasks": {}}
    for task, spec in cfg["tasks"].items():
        start = time.perf_counter()
        manager = TaskManager(include_path=str(work / "tasks" / task), include_defaults=False)
        res = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(index[task]),
            num_fewshot=spec["shots"],
            task_manager=manager,
            batch_size=cfg["batch_size"],
            device=cfg.get("device", "cpu"),
            log_samples=True,
        )
        out["eval_s"] += time.perf_counter() - start
        subjects = {}
        for name, subject in index[task].items():
            samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
            subjects[subject] = {
                "acc": res["results"][name]["acc,none"],
                "logprobs": [[float(r[0]) for r in s["filtered_resps"]] for s in samples],
                "targets": [int(s["target"]) for s in samples],
                "contexts": [_context(s) for s in samples],
            }
        out["tasks"][task] = subjects
    Path(cfg["out"]).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "run"):
        sys.exit(f"usage: {sys.argv[0]} prepare|run CONFIG.json")
    config = json.loads(Path(sys.argv[2]).read_text(encoding="utf-8"))
    (prepare if sys.argv[1] == "prepare" else run)(config)
