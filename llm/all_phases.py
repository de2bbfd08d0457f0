"""`python -m llm all --model tiny`: the whole pipeline in one command, each phase in its own
process as a user would run it, then one summary.

    sample → convert (HF → mcore) → preprocess → pretrain → convert back (mcore → HF) → eval
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llm.errors import NpuboxError
from llm.eval.data import TASKS as EVAL_TASKS
from llm.workspace import Workspace


@dataclass
class Step:
    phase: str
    argv: list[str]
    produces: Path
    seconds: float = 0.0
    figure: str = ""


def plan(model: str, ws: Workspace, train_iters: int) -> list[Step]:
    from llm.pretrain.mindspeed_llm.scripts import image_checkpoint_format
    from llm.recipes import load_recipe
    from llm.runtime_report import baked_engine

    recipe = load_recipe(model)
    if baked_engine() == "mindformers":
        return mindformers_plan(model, ws, train_iters, recipe)
    tp, pp = recipe.defaults("convert").tp, recipe.defaults("convert").pp
    converted = ws.converted_dir(model, tp, pp)
    trained = ws.pretrain_dir(model)
    trained_hf = ws.models / model / "pretrained-hf"
    steps = sample_steps(model, ws, recipe) + [
        Step(
            "convert",
            [
                "convert",
                "--model",
                model,
                "--from",
                "hf",
                "--to",
                "mcore",
                "--format",
                image_checkpoint_format(model),
                "--overwrite",
            ],
            converted,
        ),  # what this image's pretrain loads
        Step("preprocess", ["preprocess", "--model", model], ws.text_dataset(model).with_suffix(".bin")),
        Step(
            "pretrain",
            [
                "pretrain",
                "--model",
                model,
                "--load",
                str(converted),
                "--save",
                str(trained),
                "--train-iters",
                str(train_iters),
                "--save-interval",
                str(train_iters),
            ],
            trained,
        ),
        Step(
            "convert back",
            [
                "convert",
                "--model",
                model,
                "--from",
                "mcore",
                "--to",
                "hf",
                "--load-dir",
                str(trained),
                "--save-dir",
                str(trained_hf),
                "--overwrite",
            ],
            trained_hf,
        ),
    ]
    return steps + eval_steps(model, ws, trained_hf)


def mindformers_plan(model: str, ws: Workspace, train_iters: int, recipe) -> list[Step]:
    """On a MindFormers stack: the stack's converter, its MindRecord scripts and its trainer (llm.mindformers)."""
    converted = ws.checkpoint_dir(model, "mindspore")
    data = ws.data / model / "alpaca-mindrecord"
    trained = ws.checkpoint_dir(model, "mindformers")
    trained_hf = ws.models / model / "pretrained-hf"
    pretrain = ["pretrain", "--model", model, "--save", str(trained), "--train-iters", str(train_iters)]
    steps = sample_steps(model, ws, recipe) + [
        Step("convert", ["convert", "--model", model, "--to", "mindspore", "--overwrite"], converted),
        Step("preprocess", ["preprocess", "--model", model, "--format", "mindrecord"], data),
        Step("pretrain", pretrain, trained),
        Step(
            "convert back",
            ["convert", "--model", model, "--from", "mindspore", "--to", "hf"]
            + ["--load-dir", str(trained), "--save-dir", str(trained_hf), "--overwrite"],
            trained_hf,
        ),
    ]
    return steps + eval_steps(model, ws, trained_hf)


def sample_steps(model: str, ws: Workspace, recipe) -> list[Step]:
    if recipe.tokenizer.origin != "sample":
        return []
    return [Step("sample", ["sample", "--model", model], ws.hf_dir(model))]


def eval_steps(model: str, ws: Workspace, hf_dir: Path) -> list[Step]:
    out = []
    for task in EVAL_TASKS:
        result = ws.eval / model / f"{task}.json"
        argv = ["eval", "--task", task, "--model", model, "--hf-dir", str(hf_dir), "--output", str(result)]
        out.append(Step(f"eval {task}", argv, result))
    return out


def _final_loss(ws: Workspace, model: str) -> str:
    path = ws.logs / f"pretrain-{model}.jsonl"
    if not path.is_file():
        return ""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in lines if "loss" in r]
    return f"loss {losses[0]:.3f} → {losses[-1]:.3f} over {len(losses)} steps" if losses else ""


def _figure(step: Step, ws: Workspace, model: str) -> str:
    if step.phase == "pretrain":
        return _final_loss(ws, model)
    if step.phase.startswith("eval") and step.produces.is_file():
        result = json.loads(step.produces.read_text())
        overall = result["overall"]
        return f"accuracy {100 * result['accuracy']:.1f}% ({overall['correct']}/{overall['total']})"
    return ""


def print_summary(model: str, steps: list[Step], total: float, root: Path) -> None:
    from llm.tables import print_table

    rows = [
        (
            s.phase,
            f"{s.seconds:.1f} s",
            str(s.produces.relative_to(root) if s.produces.is_relative_to(root) else s.produces),
            s.figure,
        )
        for s in steps
    ]
    print_table(
        ["phase", "time", "produced", "result"],
        rows,
        title=f"npubox pipeline: {model} ({total:.0f} s), workspace {root}",
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm all", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="tiny", help="recipe name (default: tiny, whose sample data is made locally)"
    )
    parser.add_argument("--train-iters", type=int, default=100, help="pretraining steps (default: 100)")
    args = parser.parse_args(argv)

    ws = Workspace.from_env()
    steps = plan(args.model, ws, args.train_iters)
    if steps[0].phase != "sample" and not ws.hf_dir(args.model).is_dir():
        raise NpuboxError(
            f"{ws.hf_dir(args.model)} does not exist: put the {args.model} HF weights and tokenizer there"
        )
    from llm.eval.sample_sets import write_sample_sets

    started = time.monotonic()
    for step in steps:
        print(f"==> {step.phase}: python -m llm {' '.join(step.argv)}", flush=True)
        t0 = time.monotonic()
        if step.phase == "eval mmlu" and not (ws.eval / "mmlu").is_dir():
            write_sample_sets(ws.eval)  # our own small question sets, made locally
        code = subprocess.run([sys.executable, "-m", "llm", *step.argv]).returncode
        step.seconds = time.monotonic() - t0
        if code != 0:
            print_summary(args.model, steps[: steps.index(step) + 1], time.monotonic() - started, ws.root)
            raise NpuboxError(
                f"phase {step.phase} failed (exit {code}); fix it and re-run: finished phases are redone "
                "from their inputs, nothing half-written is kept"
            )
        step.figure = _figure(step, ws, args.model)
    print_summary(args.model, steps, time.monotonic() - started, ws.root)
    return 0
