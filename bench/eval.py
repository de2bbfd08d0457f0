"""`python -m llm eval` against lm-evaluation-harness 0.4.13 on the same files and the same weights.

    .venv/bin/python bench/eval.py                   # Qwen2.5-0.5B-shaped model, random weights
    .venv/bin/python bench/eval.py --model tiny      # the tiny model: a quick run, overhead only

Anchor: lm-eval's *built-in* task definitions (mmlu/default/mmlu_<subject>.yaml,
ceval/ceval-valid_<subject>.yaml, super_glue/boolq/default.yaml), included by path, with only the
data source pointed at local copies of our sample sets (llm/eval/sample_sets.py; see
bench/lm_eval_runner.py). lm-eval runs through its Python API as a user would (HFLM, then
simple_evaluate) but with ``TaskManager(include_defaults=False)``: its indexing of ~14,700
built-in tasks (most of its start-up) is left out.

Models: ``qwen25-0.5b`` (default; recipe qwen25-0.5b's shape, 494M parameters, random weights made
here in the work dir by llm.sample.weights, so compute dominates) or ``tiny`` (the workspace's),
both with the tiny model's tokenizer; or any HF directory (``--hf-dir``). The workspace is found
as the phases find it on the host (``--workspace``, else $NPUBOX_HOST_WORKSPACE, else ./workspace);
without the tiny model there, `python -m llm sample` makes it first.

lm-eval's venv: made once by bench/lm_eval_harness.py, or ``--lm-eval-python PY`` for one with
``lm-eval[hf]==0.4.13`` (plain ``lm-eval`` lacks accelerate, which its HF model imports).

For each task, each side runs ``--repeats`` times (alternating which goes first), one process per
run. Printed per task: both accuracies, how many answers, predictions and prompts are the same,
the largest |difference| of a choice's log-likelihood, and the times as the fastest and the median
of the repeats: "end to end" is the whole process (imports, model load, data, scoring) in wall-clock
and in CPU seconds (user + system, all threads: what other load on the machine adds least to),
"eval only" leaves out imports and model load (lm-eval: TaskManager + simple_evaluate; ours:
reading the data, prompts, tokenizing, scoring). Target: equal accuracy, |Δ| <= 1e-5, ours >= 2x
faster end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import lm_eval_harness as harness  # noqa: E402

from llm.eval import data as eval_data  # noqa: E402
from llm.eval import prompts, sample_sets  # noqa: E402
from llm.workspace import Workspace, host_default  # noqa: E402

TASKS = ("mmlu", "ceval", "boolq")
SHOTS = {"mmlu": 5, "ceval": 5, "boolq": 0}
BATCH_NOTE = (
    "batch size {b} on both sides, but not the same work per batch: lm-eval runs {b} rows per forward, each a whole "
    "prompt (header, shots, question) plus a choice's tokens but its last (one row per question when every choice is "
    "one token, else one per choice); ours runs a subject's header and shots once, then {b} rows per forward on top of "
    "that prefix's cached keys and values, each a question's own tokens plus the longest choice's tokens but its last "
    "(the other choices are read off the same row where they start alike)"
)


def host_workspace(arg: Path | None) -> Workspace:
    """Where `invoke run` mounts the workspace from (llm.workspace.host_default, as llm.env.commands.DEFAULT_WORKSPACE):
    --workspace, else $NPUBOX_HOST_WORKSPACE, else ./workspace."""
    return Workspace((arg or host_default()).resolve())


def tiny_model(ws: Workspace) -> Path:
    hf = ws.hf_dir("tiny")
    if not (hf / "config.json").is_file():
        print(f"{hf}: no tiny model yet; making it with `python -m llm sample --model tiny`", flush=True)
        env = {**os.environ, "NPUBOX_WORKSPACE": str(ws.root), "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "llm", "sample", "--model", "tiny"], env=env, check=True)
    return hf


def random_model(recipe_name: str, tokenizer_dir: Path, out: Path) -> Path:
    """The recipe's shape with random weights (llm.sample.weights) and the given tokenizer."""
    from llm.convert.hf import tokenizer_files
    from llm.recipes import load_recipe
    from llm.sample.weights import write_sample_weights

    start = time.perf_counter()
    write_sample_weights(load_recipe(recipe_name), out, seed=0)
    for path in tokenizer_files(tokenizer_dir):
        shutil.copy(path, out / path.name)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**30
    print(f"made {recipe_name} with random weights in {out} ({size:.2f} GiB fp32, {time.perf_counter() - start:.0f} s)")
    return out


def our_prompts(task: str, data: Path) -> dict[str, list[str]]:
    eval_set = eval_data.load_eval_set(task, data, SHOTS[task])
    return {s: [prompts.prompt(task, q, eval_set.shots[s]) for q in qs] for s, qs in eval_set.test.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen25-0.5b", help="qwen25-0.5b (random weights, default) or tiny")
    p.add_argument("--hf-dir", type=Path, help="any HF model directory instead of --model")
    p.add_argument("--workspace", type=Path, help="host workspace (default: $NPUBOX_HOST_WORKSPACE, else ./workspace)")
    p.add_argument(
        "--lm-eval-python",
        type=Path,
        help="python of a venv with lm-eval (default: made once, see bench/lm_eval_harness.py)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--repeats", type=int, default=3, help="runs of each side per task (default: 3)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both sides (default: torch's own choice)")
    p.add_argument("--work-dir", type=Path, help="parent of the temporary work dir (deleted at the end unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (models, data, both sides' outputs)")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if unknown := [t for t in tasks if t not in TASKS]:
        sys.exit(f"--tasks {','.join(unknown)}: expected some of {','.join(TASKS)}")

    lm_eval_python = args.lm_eval_python or harness.ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="bench-eval-", dir=args.work_dir))
    try:
        if args.hf_dir:
            hf_dir = args.hf_dir
        elif args.model == "tiny":
            hf_dir = tiny_model(host_workspace(args.workspace))
        else:
            hf_dir = random_model(args.model, tiny_model(host_workspace(args.workspace)), work / args.model)
        if not (hf_dir / "config.json").is_file():
            sys.exit(f"--hf-dir {hf_dir}: no config.json; expected a Hugging Face model directory")
        rows = compare_all(hf_dir, tasks, args, lm_eval_python, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report(rows, args)


MEASURES = (("e2e", "end to end, wall"), ("e2e_cpu", "end to end, CPU"), ("eval", "eval only, wall"))


def compare_all(hf_dir: Path, tasks: list[str], args, lm_eval_python: Path, work: Path) -> list[tuple]:
    env = harness.isolated_env(work, REPO)
    if args.threads:
        env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    data_root = work / "data"
    sample_sets.write_sample_sets(data_root)
    lm_work = work / "lm-eval"
    lm_work.mkdir()
    specs = {t: {"data": str(data_root / t), "shots": SHOTS[t]} for t in tasks}
    harness.runner(lm_eval_python, "prepare", {"work": str(lm_work), "tasks": specs}, env)
    print(f"weights {hf_dir}, {args.repeats} runs per side and task, work dir {work}", flush=True)

    rows = []
    for task in tasks:
        their_out, our_out = work / f"lm-eval-{task}.json", work / f"ours-{task}.json"
        cfg = {
            "work": str(lm_work),
            "hf_dir": str(hf_dir),
            "batch_size": args.batch_size,
            "device": "cpu",
            "tasks": {task: specs[task]},
            "out": str(their_out),
        }
        ours_cmd = [
            sys.executable,
            "-m",
            "llm",
            "eval",
            "--task",
            task,
            "--data-path",
            specs[task]["data"],
            "--hf-dir",
            str(hf_dir),
            "--shots",
            str(SHOTS[task]),
            "--batch-size",
            str(args.batch_size),
            "--output",
            str(our_out),
            "--quiet",
        ]
        times = {(side, m): [] for side in ("ours", "lm-eval") for m, _ in MEASURES}
        for r in range(args.repeats):
            for side in ("lm-eval", "ours") if r % 2 == 0 else ("ours", "lm-eval"):
                if side == "lm-eval":
                    t = harness.runner(lm_eval_python, "run", cfg, env)
                    eval_s = json.loads(their_out.read_text())["eval_s"]
                else:
                    t = harness.timed(ours_cmd, env)
                    timing = json.loads(our_out.read_text())["timing"]
                    eval_s = timing["read_s"] + timing["score_s"]
                for m, value in zip(("e2e", "e2e_cpu", "eval"), (t.wall_s, t.cpu_s, eval_s)):
                    times[(side, m)].append(value)
            print(
                f"  {task} run {r + 1}: lm-eval {times[('lm-eval', 'e2e')][-1]:.1f} s, "
                f"ours {times[('ours', 'e2e')][-1]:.1f} s",
                flush=True,
            )
        ours = json.loads(our_out.read_text())
        theirs = json.loads(their_out.read_text())["tasks"][task]
        rows.append((task, harness.compare(ours, theirs, our_prompts(task, Path(specs[task]["data"]))), times))
    return rows


def report(rows: list[tuple], args) -> int:
    print()
    print(
        " | ".join(("task", "n", "ours acc", "lm-eval acc", "same answer", "same pred", "same prompt", "max |Δ logL|"))
    )
    ok = True
    for task, c, _ in rows:
        print(
            f"{task} | {c.n} | {100 * c.ours_correct / c.n:.2f}% | {100 * c.their_correct / c.n:.2f}% | "
            f"{c.same_answer}/{c.n} | {c.same_prediction}/{c.n} | {c.same_prompt}/{c.n} | {c.max_delta:.1e}"
        )
        ok &= (
            c.ours_correct == c.their_correct
            and c.same_answer == c.same_prediction == c.same_prompt == c.n
            and c.max_delta <= 1e-5
        )
    print(
        "equal accuracy, answers, predictions and prompts on every task, every log-likelihood within 1e-5"
        if ok
        else "MISMATCH between lm-eval and ours"
    )

    print()
    print(BATCH_NOTE.format(b=args.batch_size))
    threads = f"{args.threads} thread(s) each" if args.threads else "torch's default threads"
    print(
        f"seconds over {args.repeats} run(s) per side, {threads}, as fastest / median; speedup = lm-eval / ours; "
        "'all' adds up the tasks run by run"
    )
    print(" | ".join(("task", "measure", "ours", "lm-eval", "speedup")))
    # run r of "all" is run r of every task added up
    total = {key: [sum(vals) for vals in zip(*(t[key] for _, _, t in rows))] for key in rows[0][2]}
    for task, times in [(task, t) for task, _, t in rows] + ([("all", total)] if len(rows) > 1 else []):
        for m, label in MEASURES:
            ours, theirs = times[("ours", m)], times[("lm-eval", m)]
            print(
                f"{task} | {label} | {min(ours):.2f} / {statistics.median(ours):.2f} | "
                f"{min(theirs):.2f} / {statistics.median(theirs):.2f} | "
                f"{min(theirs) / min(ours):.2f}x / {statistics.median(theirs) / statistics.median(ours):.2f}x"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
