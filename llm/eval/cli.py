"""`python -m llm eval`: MMLU, C-Eval or BoolQ accuracy of a HF directory or a Megatron checkpoint."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from llm.errors import NpuboxError
from llm.eval.prompts import CEVAL_STYLES
from llm.workspace import Workspace

DEFAULT_SHOTS = {"mmlu": 5, "ceval": 5, "boolq": 0}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m llm eval",
        description=(
            "Accuracy on MMLU, C-Eval or BoolQ by the log-likelihood of each choice's answer token, "
            "from a Hugging Face directory (transformers) or a Megatron checkpoint (megatron-core; "
            "TP>1 under `python -m llm launch`). With only --model M: the HF weights in the "
            "workspace's models/M/hf, the data in eval/<task>, the result in eval/M/<task>.json."
        ),
    )
    p.add_argument("--task", default="mmlu", help="mmlu | ceval | boolq (default: mmlu)")
    p.add_argument("--model", help="recipe name; fills the workspace defaults below")
    p.add_argument("--data-path", type=Path, help="task data directory (default: <workspace>/eval/<task>)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--hf-dir", type=Path, help="Hugging Face model directory (default: <workspace>/models/M/hf)")
    src.add_argument(
        "--load", type=Path, help="Megatron checkpoint directory (latest_checkpointed_iteration.txt, iter_*/mp_rank_*)"
    )
    p.add_argument(
        "--tokenizer", type=Path, help="tokenizer directory (default: --hf-dir, else <workspace>/models/M/hf)"
    )
    p.add_argument("--shots", type=int, help="few-shot examples per question (default: 5 for mmlu/ceval, 0 for boolq)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (default: 8)")
    p.add_argument("--subjects", help="comma-separated subjects to evaluate (default: all in --data-path)")
    p.add_argument(
        "--max-length", type=int, help="context window; longer prompts are left-truncated (default: the model's)"
    )
    p.add_argument(
        "--ceval-prompt",
        default="lm-eval",
        choices=CEVAL_STYLES,
        help="C-Eval prompt: lm-eval's ceval-valid (default) or MindSpeed-LLM's own (see llm/eval/prompts.py)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="weights dtype (default: float32)",
    )
    p.add_argument(
        "--output", type=Path, help="results JSON (default: <workspace>/eval/M/<task>.json when --model is given)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise NpuboxError(f"--batch-size {args.batch_size}: expected 1 or more")
    return args


def resolve_defaults(args: argparse.Namespace, ws: Workspace) -> None:
    if args.model:
        from llm.recipes import load_recipe

        load_recipe(args.model)  # an unknown model is an error here, not a missing directory later
        if args.data_path is None and not (ws.eval / args.task).exists():
            raise NpuboxError(
                f"{ws.eval / args.task}: not found; put the {args.task} data there, pass --data-path, "
                "or write the sample sets with `python -m llm.eval.sample_sets`"
            )
        args.data_path = args.data_path or ws.eval / args.task
        if args.load is None:
            args.hf_dir = args.hf_dir or ws.hf_dir(args.model)
        args.tokenizer = args.tokenizer or args.hf_dir or ws.hf_dir(args.model)
        args.output = args.output or ws.eval / args.model / f"{args.task}.json"
    if args.data_path is None:
        raise NpuboxError(
            "--data-path is missing; give the task's data directory (or --model M for <workspace>/eval/<task>)"
        )
    if args.hf_dir is None and args.load is None:
        raise NpuboxError(
            "no model given: pass --hf-dir DIR or --load MEGATRON_DIR (or --model M for the workspace's HF weights)"
        )
    args.tokenizer = args.tokenizer or args.hf_dir
    if args.tokenizer is None:
        raise NpuboxError("--load needs a tokenizer: pass --tokenizer DIR (or --model M for <workspace>/models/M/hf)")


def main(argv: list[str]) -> int:
    from rich.console import Console

    from llm.eval import prompts, results, scoring
    from llm.eval.data import TASKS, load_eval_set
    from llm.tokenizer import load_tokenizer

    args = parse_args(argv)
    if args.task not in TASKS:
        raise NpuboxError(f"--task {args.task!r} is not a known task; expected one of {', '.join(TASKS)}")
    resolve_defaults(args, Workspace.from_env())
    shots = DEFAULT_SHOTS[args.task] if args.shots is None else args.shots
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
    started = time.perf_counter()
    eval_set = load_eval_set(args.task, args.data_path, shots, subjects)
    if not eval_set.num_questions:
        raise NpuboxError(
            f"--data-path {args.data_path}: no usable {args.task} questions ({eval_set.problems.counts() or 'no rows'})"
        )
    read = time.perf_counter()
    if args.load is not None:
        from llm.eval.mcore_engine import MegatronEngine

        engine = MegatronEngine(args.load, model=args.model, dtype=args.dtype)
        checkpoint = engine.describe()
    else:
        from llm import accel
        from llm.eval.hf_engine import HFEngine

        engine = HFEngine(args.hf_dir, dtype=args.dtype, device=accel.detect().device())
        checkpoint = {"engine": "transformers", "hf_dir": str(args.hf_dir)}
    if args.max_length:
        engine.max_length = args.max_length
    is_main = getattr(engine, "is_main", True)
    console = Console(stderr=True, quiet=not is_main)
    tokenizer = load_tokenizer(args.tokenizer).transformers()
    loaded = time.perf_counter()

    def tokenize(text: str) -> list[int]:
        return tokenizer.encode(text)  # special tokens as transformers adds them (BOS for Llama), as lm-eval does

    order = [(s, q) for s, qs in eval_set.test.items() for q in qs]
    style = args.ceval_prompt
    conts = prompts.continuations(args.task, style)
    shared = {s: prompts.shared_start(args.task, s, shots, style) for s, shots in eval_set.shots.items()}
    requests = [
        scoring.encode(tokenize, prompts.prompt(args.task, q, eval_set.shots[s], style), conts, shared[s])
        for s, q in order
    ]
    scored = run_scoring(engine, requests, args.batch_size, quiet=args.quiet or not is_main, console=console)
    finished = time.perf_counter()

    predictions: dict[str, list[int]] = {s: [] for s in eval_set.test}
    scores: dict[str, list[list[float]]] = {s: [] for s in eval_set.test}
    for (subject, _), lp in zip(order, scored.choice_logprobs):
        predictions[subject].append(scoring.argmax(lp))
        scores[subject].append(lp)
    tallies = results.tally(args.task, eval_set, predictions)
    if not is_main:
        engine.close()
        return 0
    results.print_table(args.task, tallies, eval_set.problems.counts(), Console())
    timing = {
        "read_s": round(read - started, 3),
        "load_s": round(loaded - read, 3),
        "score_s": round(finished - loaded, 3),
        "questions_per_s": round(len(order) / max(finished - loaded, 1e-9), 2),
        "forward_prefixes": scored.forwards,
        "truncated_prompts": scored.truncated,
    }
    settings = {
        "shots": shots,
        "batch_size": args.batch_size,
        "max_length": engine.max_length,
        "dtype": args.dtype,
        **({"prompt": args.ceval_prompt} if args.task == "ceval" else {}),
        "subjects": list(eval_set.test),
        "tokenizer": str(args.tokenizer),
    }
    if args.output:
        out = results.to_json(
            args.task,
            eval_set,
            predictions,
            scores,
            tallies,
            model=args.model,
            checkpoint=checkpoint,
            data_path=args.data_path,
            settings=settings,
            timing=timing,
        )
        results.write_json(args.output, out)
        print(f"results: {args.output}")
    accuracy = 100 * tallies["overall"].accuracy
    print(f"{args.task} accuracy {accuracy:.2f}% on {len(order)} questions ({timing['score_s']} s)")
    if hasattr(engine, "close"):
        engine.close()
    return 0


def run_scoring(engine, requests, batch_size: int, quiet: bool, console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from llm.eval import scoring

    if quiet or not os.isatty(2):
        return scoring.score(engine, requests, batch_size)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        bar = progress.add_task("scoring", total=None)
        return scoring.score(
            engine,
            requests,
            batch_size,
            on_start=lambda total: progress.update(bar, total=total),
            on_batch=lambda n: progress.advance(bar, n),
        )
