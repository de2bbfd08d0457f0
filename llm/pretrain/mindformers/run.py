"""Run the ``mindformers`` engine: msrun around the stack's own trainer script (``run_qwen2.py`` for the v1.3.2
guide, ``run_mindformer.py --register_path research/qwen2_5`` for r1.8.0), in the guide's working folder, with the
guide's yaml and the workspace's paths on top.

    python -m llm pretrain --model qwen2-7b [--set runner_config.epochs=1 ...] [--dry-run]
    python -m llm launch --nnodes 2 --node-rank 1 --master-addr HOST pretrain --model qwen2-7b

``--dry-run`` prints the command, its folder and environment, and each yaml value npubox changes (``key: guide's ->
npubox's``), and says which inputs are missing; it runs nothing. What npubox changes in the guide's yaml: the
workspace's paths; the recipe's shape (``model.model_config``: a no-op for the guide's own model, the whole shape
for a tiny test model, which also brings its sequence length, batch, learning rate and fp32); ``--train-iters``
(one epoch of that many batches); the worker count; on a CPU (the twin) :mod:`llm.mindformers.cpu`'s values.

msrun is started with an argv list, not through ``msrun_launcher.sh``: the script ``eval``s one string, so a path
with a space (or a quote) would be split or run; the argv is the one the script composes (``msrun.py``), with
``--join=True``: the launcher's ``False`` returns at once and leaves the workers running, and npubox waits for them
to report their result. Everything the trainer writes goes to the workspace: the yaml's ``output_dir`` and strategy
file to ``--save``, msrun's logs to ``logs/``; the source tree in the image stays read-only. Worker 0's step lines
become ``logs/pretrain-<model>.jsonl``, the progress bar and the ``--phase all`` summary, as on the other engines.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from llm.errors import NpuboxError
from llm.mindformers.cpu import SHIMS, cpu_additions, cpu_overrides
from llm.mindformers.guides import Guide, config_for
from llm.mindformers.stack import Stack, add_stack_arguments, resolve_stack
from llm.pretrain.mindformers.loss_log import parse_line
from llm.pretrain.mindformers.msrun import MsrunOptions, launcher_defaults, msrun_argv
from llm.pretrain.mindformers.yaml_config import compose, get_path, load_guide_yaml, parse_assignment
from llm.recipes import Recipe, load_recipe
from llm.target_lock import save_lock
from llm.workspace import Workspace

PARALLEL_KEYS = ("parallel_config.data_parallel", "parallel_config.model_parallel", "parallel_config.pipeline_stage")
MODEL_CONFIG = "model.model_config"
MAX_WORKERS = 1024


@dataclass
class MindFormersPlan:
    guide: Guide
    cwd: Path
    argv: list[str]
    env: dict[str, str]  # what is set on top of the caller's environment
    config_path: Path  # where the composed yaml goes (the argv's --config)
    composed: dict
    changes: list[str]
    shims: tuple[str, ...] = ()


def recipe_overrides(recipe: Recipe, base: dict) -> dict[str, Any]:
    """The recipe's shape in the guide's ``model.model_config`` (keys the yaml has); a tiny test model also brings
    its sequence length, micro batch, learning rate and precision."""
    a = recipe.architecture
    shape = {
        "hidden_size": a.hidden_size,
        "num_layers": a.num_layers,
        "num_heads": a.num_attention_heads,
        "n_kv_heads": a.num_query_groups,
        "vocab_size": a.vocab_size,
        "intermediate_size": a.ffn_hidden_size,
        "qkv_has_bias": a.add_qkv_bias,
        "rms_norm_eps": a.norm_epsilon,
        "theta": a.rotary_base,
        "rotary_emb_base": a.rotary_base,
        "kv_channels": a.head_dim,
        "max_position_embedding": a.max_position_embeddings,
    }
    if recipe.tiny:
        pretrain = recipe.defaults("pretrain")
        shape["seq_length"] = pretrain.seq_length
        if recipe.training.precision == "fp32":
            for key in ("compute_dtype", "layernorm_compute_type", "softmax_compute_type", "rotary_dtype"):
                shape[key] = "float32"
    model_config = get_path(base, MODEL_CONFIG)
    out = {f"{MODEL_CONFIG}.{k}": v for k, v in shape.items() if k in model_config}
    if recipe.tiny:
        out |= {
            "runner_config.batch_size": recipe.defaults("pretrain").micro_batch_size,
            "optimizer.learning_rate": recipe.training.lr,
            "lr_schedule.learning_rate": recipe.training.lr,
        }
        if "lr_end" in get_path(base, "lr_schedule"):
            out["lr_schedule.lr_end"] = recipe.training.min_lr
        if "batch_size" in get_path(base, "train_dataset"):
            out["train_dataset.batch_size"] = recipe.defaults("pretrain").micro_batch_size
    return out


def make_plan(
    guide: Guide,
    source_dir: Path,
    model: str,
    *,
    train_data: str,
    config_path: str,
    msrun: MsrunOptions,
    overrides: dict[str, Any],
    additions: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    log_mf_path: str | None = None,
    tiny: bool = False,
    run_mode: str | None = None,
    shims: tuple[str, ...] = (),
    load: str | None = None,
) -> MindFormersPlan:
    """The guide's command and yaml for ``model`` with ``overrides`` (dotted yaml keys) applied."""
    base = load_guide_yaml(Path(source_dir) / guide.workdir / config_for(guide, model, tiny))
    composed, changes = compose(base, overrides, additions)
    if get_path(composed, "use_parallel"):
        sizes = [int(get_path(composed, key)) for key in PARALLEL_KEYS]
        if sizes[0] * sizes[1] * sizes[2] != msrun.worker_num:
            raise NpuboxError(
                f"the yaml's data_parallel {sizes[0]} x model_parallel {sizes[1]} x pipeline_stage {sizes[2]} is "
                f"{sizes[0] * sizes[1] * sizes[2]} devices, and msrun starts {msrun.worker_num} workers: pass "
                f"--set parallel_config.data_parallel=N so that the product is {msrun.worker_num}"
            )
    script = [guide.program, *guide.program_args, "--config", config_path, "--run_mode", run_mode or guide.run_mode]
    script += [guide.data_flag, train_data]
    if load and guide.load_flag:
        script += [guide.load_flag, load]
    if msrun.worker_num == 1 and msrun.python_for_one:
        argv = ["python", *script]  # the launcher's own advice for one worker
    else:
        argv = [*msrun_argv(msrun), *script]
    env = dict(env or {"PYTHONPATH": os.pathsep.join(p for p in (str(source_dir), os.environ.get("PYTHONPATH")) if p)})
    if log_mf_path:
        env["LOG_MF_PATH"] = log_mf_path
    return MindFormersPlan(
        guide, Path(source_dir) / guide.workdir, argv, env, Path(config_path), composed, changes, shims
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm pretrain --engine mindformers",
        description="Train with the stack's own MindFormers trainer under msrun: the release guide's script and "
        "yaml for the model, the workspace's paths and your --set values on top.",
    )
    a = p.add_argument
    a("--model", required=True, help="model recipe (python -m llm recipe list); its guide yaml is the stack's")
    add_stack_arguments(p)
    a(
        "--train-data",
        type=Path,
        help="MindRecord dataset (a .mindrecord file or a folder of them); default: data/<model>/alpaca-mindrecord",
    )
    a(
        "--load",
        type=Path,
        help="MindSpore checkpoint to start from; default: checkpoints/<model>/mindspore/<model>.ckpt",
    )
    a(
        "--save",
        type=Path,
        help="the trainer's output_dir (checkpoints, strategy); default: checkpoints/<model>/mindformers",
    )
    a("--tokenizer", type=Path, help="folder with vocab.json and merges.txt; default: models/<model>/hf")
    a("--workers", type=int, help="msrun workers on this node (default: the launcher's, 8; a CPU: 1)")
    a(
        "--train-iters",
        type=int,
        help="train one epoch of this many batches (train_dataset.data_loader.num_samples); default: the guide's "
        "epochs over the whole dataset (a tiny test model: its recipe's steps)",
    )
    a("--run-mode", choices=("finetune", "train"), help="the trainer's --run_mode (default: the guide's)")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="a yaml value, e.g. runner_config.epochs=1")
    a("--dry-run", action="store_true", help="print the command, its folder and environment and the yaml changes")
    return p


def msrun_options(stack: Stack, ns: argparse.Namespace, launch_ns: argparse.Namespace | None, log_dir: Path):
    opts = replace(launcher_defaults(stack.source_dir), log_dir=str(log_dir), join="True")
    default = 1 if stack.on_cpu else opts.local_worker_num
    local = ns.workers if ns.workers is not None else (getattr(launch_ns, "nproc", None) or default)
    if not 1 <= local <= MAX_WORKERS:
        raise NpuboxError(f"--workers {local}: expected 1 to {MAX_WORKERS}")
    opts = replace(opts, worker_num=local, local_worker_num=local)
    nnodes = str(launch_ns.nnodes) if launch_ns is not None else "1"
    if not nnodes.isdigit() or int(nnodes) < 1:
        raise NpuboxError(f"--nnodes {nnodes}: msrun takes a fixed node count (no MIN:MAX rendezvous)")
    if int(nnodes) > 1:
        opts = replace(
            opts,
            worker_num=local * int(nnodes),
            master_addr=launch_ns.master_addr,
            master_port=launch_ns.master_port or opts.master_port,
            node_rank=launch_ns.node_rank,
        )
    return opts


def main(argv: list[str], launch_ns: argparse.Namespace | None = None) -> int:
    ns = build_parser().parse_args(argv)
    stack = resolve_stack(ns)
    recipe = load_recipe(ns.model)
    ws = Workspace.from_env()
    model = ns.model
    train_data = ns.train_data or ws.data / model / "alpaca-mindrecord"
    load = ns.load or ws.checkpoint_dir(model, "mindspore") / f"{model}.ckpt"
    save = ns.save or ws.checkpoint_dir(model, "mindformers")
    tokenizer = ns.tokenizer or ws.hf_dir(model)
    guide = stack.guide
    base = load_guide_yaml(stack.source_dir / guide.workdir / config_for(guide, model, recipe.tiny))
    msrun = msrun_options(stack, ns, launch_ns, ws.logs / f"msrun-{model}")
    overrides: dict[str, Any] = {
        "output_dir": str(save),
        "load_checkpoint": str(load),
        "train_dataset.data_loader.dataset_dir": str(train_data),
        "processor.tokenizer.vocab_file": str(tokenizer / "vocab.json"),
        "processor.tokenizer.merges_file": str(tokenizer / "merges.txt"),
        "parallel.strategy_ckpt_save_file": str(save / "ckpt_strategy.ckpt"),
        "context.save_graphs_path": str(save / "graph"),  # MindSpore makes it at start-up, even unused
    }
    if "processor" not in base:  # r1.8.0's yamls name no tokenizer: the dataset is tokenized already
        overrides = {k: v for k, v in overrides.items() if not k.startswith("processor.")}
    overrides |= guide.command_values
    overrides |= recipe_overrides(recipe, base)
    from llm.preprocess import default_workers

    loaders = get_path(base, "train_dataset.num_parallel_workers")
    if loaders > default_workers():  # MindSpore's data pipeline refuses more workers than the cores it may use
        overrides["train_dataset.num_parallel_workers"] = default_workers()
    additions: dict[str, Any] = {}
    if stack.on_cpu:
        overrides |= cpu_overrides(msrun.worker_num)
        additions |= cpu_additions()
    train_iters = ns.train_iters or (recipe.training.train_iters if recipe.tiny else None)
    if train_iters is not None:
        if train_iters < 1:
            raise NpuboxError(f"--train-iters {train_iters}: expected 1 or more")
        batch = (overrides.get("runner_config.batch_size") or get_path(base, "runner_config.batch_size")) or 1
        overrides["runner_config.epochs"] = 1
        additions["train_dataset.data_loader.num_samples"] = train_iters * int(batch)
    overrides.update(parse_assignment(item) for item in ns.set)
    config_path = save / f"npubox-{model}.yaml"
    plan = make_plan(
        guide,
        stack.source_dir,
        model,
        train_data=str(train_data),
        config_path=str(config_path),
        msrun=msrun,
        overrides=overrides,
        additions=additions,
        env=stack.env(),
        log_mf_path=str(ws.logs / f"mindformers-{model}"),
        tiny=recipe.tiny,
        run_mode=ns.run_mode,
        shims=SHIMS if stack.on_cpu else (),
        load=str(load),
    )
    missing = [f"{what} {path}" for what, path in (("--train-data", train_data), ("--load", load)) if not path.exists()]
    missing += [f"--tokenizer {tokenizer / n}" for n in ("vocab.json", "merges.txt") if not (tokenizer / n).is_file()]
    print_plan(plan, missing)
    if ns.dry_run or getattr(launch_ns, "dry_run", False):
        return 0
    if missing:
        raise NpuboxError(f"missing: {'; '.join(missing)} (convert and preprocess first, or pass the paths)")
    with save_lock(str(save), msrun.node_rank == 0):
        save.mkdir(parents=True, exist_ok=True)
        from llm.atomic import write_text_atomic

        write_text_atomic(config_path, yaml.safe_dump(plan.composed, sort_keys=False))
        code = run_plan(plan, recipe, Path(msrun.log_dir), ws.logs / f"pretrain-{model}.jsonl", msrun.worker_num)
    if code != 0:
        print(f"error: the trainer exited {code}; the workers' logs are in {msrun.log_dir}", file=sys.stderr)
    return code


def run_plan(plan: MindFormersPlan, recipe: Recipe, log_dir: Path, jsonl: Path, workers: int) -> int:
    """Start the plan and follow worker 0's log until it ends: each step line becomes a metrics record, a log line
    and the progress bar. One worker without msrun writes its output into the same log file itself."""
    from llm.pretrain.metrics import MetricsLog, flops_per_step, step_metrics

    log_dir.mkdir(parents=True, exist_ok=True)
    worker_log = log_dir / "worker_0.log"
    worker_log.unlink(missing_ok=True)
    env = {**os.environ, **plan.env}
    if plan.argv[0] == "python":
        with open(worker_log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *plan.argv[1:]], cwd=plan.cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
    else:
        proc = subprocess.Popen(plan.argv, cwd=plan.cwd, env=env, stdout=subprocess.DEVNULL)
    seq = int(get_path(plan.composed, f"{MODEL_CONFIG}.seq_length"))
    batch = int(get_path(plan.composed, "runner_config.batch_size"))
    tokens, flops = seq * batch * workers, flops_per_step(recipe, seq, batch * workers)
    metrics, position = None, 0
    try:
        while True:
            finished = proc.poll() is not None
            lines, position = read_new_lines(worker_log, position)
            for step in filter(None, map(parse_line, lines)):
                if metrics is None:
                    metrics = MetricsLog(str(jsonl), step.total, 0, 1, sys.stderr.isatty())
                metrics.log(
                    step_metrics(
                        step.iteration,
                        step.loss,
                        step.lr or 0.0,
                        step.grad_norm,
                        max(step.step_time_s, 1e-3),
                        tokens,
                        flops,
                        workers,
                        None,
                        step.iteration * batch * workers,
                    )
                )
            if finished:
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:  # interrupted: msrun passes SIGTERM on to its workers
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        if metrics is not None:
            metrics.close()
    code = proc.wait()
    if code != 0 and worker_log.is_file():
        print("\n".join(read_new_lines(worker_log, 0)[0][-15:]), file=sys.stderr)
    return code


def read_new_lines(path: Path, position: int) -> tuple[list[str], int]:
    """The whole lines written to ``path`` after byte ``position``, and the position after them."""
    try:
        with open(path, "rb") as f:
            f.seek(position)
            chunk = f.read()
    except FileNotFoundError:
        return [], position
    complete = chunk[: chunk.rfind(b"\n") + 1]
    return complete.decode("utf-8", errors="replace").splitlines(), position + len(complete)


def print_plan(plan: MindFormersPlan, missing: list[str]) -> None:
    out = sys.stderr
    print(f"mindformers {plan.guide.release}: {plan.guide.where}", file=out)
    print(f"  cd {plan.cwd}", file=out)
    for key, value in sorted(plan.env.items()):
        print(f"  {key}={shlex.quote(value)}", file=out)
    print(f"  {shlex.join(plan.argv)}", file=out)
    print(f"  {plan.config_path}: the guide's yaml with {len(plan.changes)} value(s) changed", file=out)
    for change in plan.changes:
        print(f"    {change}", file=out)
    for shim in plan.shims:
        print(f"  CPU shim: {shim}", file=out)
    for item in missing:
        print(f"  missing: {item}", file=out)
