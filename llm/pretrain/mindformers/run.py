"""Run the ``mindformers`` engine: msrun around the stack's own trainer script (``run_qwen2.py`` for the v1.3.2
guide), in the guide's working folder, with the guide's yaml and the workspace's paths on top.

    python -m llm pretrain --model qwen2-7b [--set runner_config.epochs=1 ...] [--dry-run]
    python -m llm launch --nnodes 2 --node-rank 1 --master-addr HOST pretrain --model qwen2-7b

The stack is the image's (its baked spec's ``mindformers`` source commit); ``--stack COMMIT`` and ``--source-dir DIR``
name another (tests, plans outside an image). ``--dry-run`` prints the msrun command, its folder and environment, and
each yaml value npubox changes (``key: guide's -> npubox's``), and says which inputs are missing; it runs nothing.

msrun is started with an argv list, not through ``msrun_launcher.sh``: the script ``eval``s one string, so a path
with a space (or a quote) would be split or run; the argv is the one the script composes (``msrun.py``). Everything
the trainer writes goes to the workspace: the yaml's ``output_dir`` and strategy file to ``--save``, msrun's logs to
``logs/``; the source tree in the image stays read-only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from llm.errors import NpuboxError
from llm.pretrain.mindformers.guides import SOURCE_NAME, Guide, config_for, guide_for_commit
from llm.pretrain.mindformers.msrun import MsrunOptions, launcher_defaults, msrun_argv
from llm.pretrain.mindformers.yaml_config import compose, get_path, load_guide_yaml, parse_assignment
from llm.target_lock import save_lock
from llm.workspace import Workspace

SOURCES_ROOT = Path(os.environ.get("NPUBOX_SOURCES", "/opt/npubox/sources"))  # where images unpack pinned sources
PARALLEL_KEYS = ("parallel_config.data_parallel", "parallel_config.model_parallel", "parallel_config.pipeline_stage")


@dataclass
class MindFormersPlan:
    guide: Guide
    cwd: Path
    argv: list[str]
    env: dict[str, str]  # what is set on top of the caller's environment
    config_path: Path  # where the composed yaml goes (the argv's --config)
    composed: dict
    changes: list[str]


def make_plan(
    guide: Guide,
    source_dir: Path,
    model: str,
    *,
    train_data: str,
    config_path: str,
    msrun: MsrunOptions,
    overrides: dict[str, Any],
    log_mf_path: str | None = None,
) -> MindFormersPlan:
    """The guide's command and yaml for ``model`` with ``overrides`` (dotted yaml keys) applied."""
    base = load_guide_yaml(Path(source_dir) / guide.workdir / config_for(guide, model))
    composed, changes = compose(base, overrides)
    if get_path(composed, "use_parallel"):
        sizes = [int(get_path(composed, key)) for key in PARALLEL_KEYS]
        if sizes[0] * sizes[1] * sizes[2] != msrun.worker_num:
            raise NpuboxError(
                f"the yaml's data_parallel {sizes[0]} x model_parallel {sizes[1]} x pipeline_stage {sizes[2]} is "
                f"{sizes[0] * sizes[1] * sizes[2]} devices, and msrun starts {msrun.worker_num} workers: pass "
                f"--set parallel_config.data_parallel=N so that the product is {msrun.worker_num}"
            )
    argv = [*msrun_argv(msrun), guide.program, "--config", config_path, "--run_mode", guide.run_mode]
    argv += [guide.data_flag, train_data]
    # What msrun_launcher.sh exports: the source root on PYTHONPATH ($MF_SCRIPTS_ROOT/../), MindFormers' log folder.
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(source_dir), os.environ.get("PYTHONPATH", "")) if p)}
    if log_mf_path:
        env["LOG_MF_PATH"] = log_mf_path
    return MindFormersPlan(guide, Path(source_dir) / guide.workdir, argv, env, Path(config_path), composed, changes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm pretrain --engine mindformers",
        description="Train with the stack's own MindFormers trainer under msrun: the release guide's script and "
        "yaml for the model, the workspace's paths and your --set values on top.",
    )
    a = p.add_argument
    a("--model", required=True, help="model recipe (python -m llm recipe list); its guide yaml is the stack's")
    a("--stack", help="MindFormers source commit (default: the image's spec)")
    a("--source-dir", type=Path, help="MindFormers source tree (default: the image's, under $NPUBOX_SOURCES)")
    a("--train-data", type=Path, help="MindRecord dataset; default: data/<model>/alpaca-messages.mindrecord")
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
    a("--workers", type=int, help="msrun workers on this node (default: the launcher's, 8)")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="a yaml value, e.g. runner_config.epochs=1")
    a("--dry-run", action="store_true", help="print the command, its folder and environment and the yaml changes")
    return p


def resolve_stack(ns: argparse.Namespace) -> tuple[Guide, Path]:
    commit = ns.stack
    if commit is None:
        from llm.runtime_report import load_baked

        sources = (((load_baked() or {}).get("spec") or {}).get("sources")) or []
        commit = next((s["commit"] for s in sources if s.get("name") == SOURCE_NAME), None)
        if commit is None:
            raise NpuboxError(
                f"the image's spec has no {SOURCE_NAME} source, which the mindformers engine runs; "
                "use a MindFormers image, or --stack COMMIT with --source-dir DIR"
            )
    guide = guide_for_commit(commit)
    source_dir = ns.source_dir or SOURCES_ROOT / SOURCE_NAME
    if not (source_dir / guide.workdir / guide.program).is_file():
        raise NpuboxError(
            f"{source_dir / guide.workdir / guide.program}: not found; expected MindFormers {guide.release}'s "
            "source tree (--source-dir)"
        )
    return guide, source_dir


def msrun_options(source_dir: Path, ns: argparse.Namespace, launch_ns: argparse.Namespace | None, log_dir: Path):
    opts = replace(launcher_defaults(source_dir), log_dir=str(log_dir))
    local = (
        ns.workers or (getattr(launch_ns, "nproc", None) if launch_ns is not None else None) or opts.local_worker_num
    )
    if local < 1:
        raise NpuboxError(f"--workers {local}: expected 1 or more")
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
    guide, source_dir = resolve_stack(ns)
    ws = Workspace.from_env()
    model = ns.model
    train_data = ns.train_data or ws.data / model / "alpaca-messages.mindrecord"
    load = ns.load or ws.checkpoint_dir(model, "mindspore") / f"{model}.ckpt"
    save = ns.save or ws.checkpoint_dir(model, "mindformers")
    tokenizer = ns.tokenizer or ws.hf_dir(model)
    overrides: dict[str, Any] = {
        "output_dir": str(save),
        "load_checkpoint": str(load),
        "train_dataset.data_loader.dataset_dir": str(train_data),
        "processor.tokenizer.vocab_file": str(tokenizer / "vocab.json"),
        "processor.tokenizer.merges_file": str(tokenizer / "merges.txt"),
        "parallel.strategy_ckpt_save_file": str(save / "ckpt_strategy.ckpt"),
    }
    overrides.update(parse_assignment(item) for item in ns.set)
    msrun = msrun_options(source_dir, ns, launch_ns, ws.logs / f"msrun-{model}")
    config_path = save / f"npubox-{model}.yaml"
    plan = make_plan(
        guide,
        source_dir,
        model,
        train_data=str(train_data),
        config_path=str(config_path),
        msrun=msrun,
        overrides=overrides,
        log_mf_path=str(ws.logs / f"mindformers-{model}"),
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
        proc = subprocess.run(plan.argv, cwd=plan.cwd, env={**os.environ, **plan.env})
    if proc.returncode != 0:
        print(f"error: msrun exited {proc.returncode}; the workers' logs are in {msrun.log_dir}", file=sys.stderr)
    return proc.returncode


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
    for item in missing:
        print(f"  missing: {item}", file=out)
