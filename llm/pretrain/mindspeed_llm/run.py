"""Run the `mindspeed-llm` engine: torchrun around the stack's own ``pretrain_gpt.py``, its log lines read live into
the metrics JSONL and progress bar that the mcore engine writes.

    python -m llm pretrain --model qwen25-7b [--tp 4 ...] [--dry-run] [-- extra Megatron flags]
    python -m llm launch --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 pretrain --model qwen25-7b

Alone, ``pretrain`` launches one node with a process per device; under ``llm launch`` the launch options (nodes,
ranks, master, rendezvous, ``--env``) apply as for any phase, and the master port defaults to the example script's.
The stack is the image's (its baked spec's MindSpeed-LLM or ModelLink source commit); ``--stack COMMIT`` and
``--source-dir DIR`` name another (tests, validation outside an image). ``--dry-run`` prints the torchrun command
and its environment, one flag a line, and runs nothing.

The process that reads the log is the one holding the last rank's output (Megatron prints on the last rank): with
several nodes, the last node writes logs/pretrain-<model>.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llm.errors import NpuboxError
from llm.pretrain.metrics import StepMetrics, flops_per_step, step_metrics
from llm.pretrain.mindspeed_llm.megatron_log import parse_line
from llm.pretrain.mindspeed_llm.scripts import (
    Composed,
    ExampleScript,
    Stack,
    compose,
    script_for,
    stack_for_commit,
    stack_from_spec,
)
from llm.runtime_report import SOURCES_ROOT
from llm.target_lock import save_lock

PROGRAM = "pretrain_gpt.py"


@dataclass
class EngineStepMetrics(StepMetrics):
    """The mcore engine's record plus what only Megatron's log line has."""

    tflops_per_device: float | None = None  # as the engine computes it (its own FLOPs count)
    loss_scale: float | None = None
    skipped_iterations: int | None = None
    nan_iterations: int | None = None


@dataclass
class EnginePlan:
    stack: Stack
    script: ExampleScript
    source_dir: Path
    composed: Composed
    torchrun_args: list[str]  # ends with the program and its flags
    env: dict[str, str]  # set for torchrun and the workers
    world_size: int
    recipe: object
    cfg: object
    missing: list[str] = field(default_factory=list)  # what the run lacks, one sentence each (a dry run says so)

    @property
    def program(self) -> Path:
        return self.source_dir / PROGRAM


def engine_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm pretrain",
        add_help=False,
        allow_abbrev=False,
        usage="[--dry-run] [--stack COMMIT] [--source-dir DIR] [pretrain options] [-- flags]",
        epilog="After --: Megatron / MindSpeed-LLM flags for pretrain_gpt.py, each replacing a "
        "composed flag of the same name.",
    )
    p.add_argument("--dry-run", action="store_true", help="print the torchrun command and environment, run nothing")
    p.add_argument("--stack", help="MindSpeed-LLM / ModelLink commit (default: the image's baked spec)")
    p.add_argument("--source-dir", type=Path, help="the MindSpeed-LLM / ModelLink tree (default: the image's)")
    return p


def given_fields(argv: list[str]) -> set[str]:
    """The pretrain config fields that ``argv`` sets explicitly (argparse cannot tell a default from a value)."""
    from llm.pretrain.config import build_parser

    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def world_size(launch_ns: argparse.Namespace, nproc: int) -> int:
    nnodes = str(launch_ns.nnodes).split(":")[-1]  # c10d MIN:MAX: the layout must fit the largest world
    try:
        return nproc * int(nnodes)
    except ValueError:
        raise NpuboxError(f"--nnodes {launch_ns.nnodes!r}: expected a number or MIN:MAX") from None


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the arguments before ``--``, the Megatron flags after it)."""
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def data_prefixes(values: tuple[str, ...]) -> list[str]:
    """The dataset prefixes of Megatron's ``--data-path``: ``PREFIX ...``, or ``WEIGHT PREFIX WEIGHT PREFIX ...`` when
    an even count's every other value is a number (``get_blend_from_list`` in Megatron-LM's
    megatron/core/datasets/utils.py, core_r0.8.0 and core_v0.12.1)."""
    if not values:
        raise NpuboxError("--data-path is given no dataset prefix; expected PREFIX or WEIGHT PREFIX [WEIGHT PREFIX]...")
    if len(values) > 1 and len(values) % 2 == 0 and all(_is_number(w) for w in values[::2]):
        return list(values[1::2])
    return list(values)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def missing_data(composed: Composed, model: str) -> list[str]:
    """Why each prefix of the ``--data-path`` that pretrain_gpt.py is given (composed, or passed through after
    ``--``) cannot be trained on: the check the mcore engine makes, one sentence each."""
    from llm.pretrain.config import check_dataset

    out = []
    for prefix in data_prefixes(composed.flags["--data-path"]):
        try:
            check_dataset(prefix, model)
        except NpuboxError as e:
            out.append(str(e))
    return out


def make_plan(
    argv: list[str],
    launch_ns: argparse.Namespace | None = None,
    devices: int = 0,
    workspace=None,
    dry_run: bool = False,
) -> tuple[EnginePlan, argparse.Namespace]:
    """Everything the run needs, checked, before anything starts. ``devices``: devices found on this node. A missing
    or broken dataset is refused, or with ``dry_run`` listed in the plan's ``missing``."""
    from llm.pretrain.config import build_parser, config_from_args
    from llm.recipes import load_recipe
    from llm.runtime_report import load_baked
    from llm.torchrun import build_parser as launch_parser
    from llm.torchrun import plan as launch_plan
    from llm.workspace import Workspace

    own, extra = split_extra(argv)
    opts, rest = engine_parser().parse_known_args(own)
    ws = workspace or Workspace.from_env()
    cfg = config_from_args(build_parser().parse_args(rest), ws)
    given = given_fields(rest)
    recipe = load_recipe(cfg.model)

    if opts.stack:
        stack, source = stack_for_commit(opts.stack), None
    else:
        baked = load_baked()
        if baked is None:
            raise NpuboxError(
                "the mindspeed-llm engine runs the image's MindSpeed-LLM source, and this is not an npubox "
                "image (no baked spec); pass --stack COMMIT --source-dir DIR, or --engine mcore"
            )
        stack, source = stack_from_spec(baked["spec"])
    source_dir = opts.source_dir or SOURCES_ROOT / (source or stack.source)
    script = script_for(stack, recipe.name)

    ns = launch_ns or launch_parser().parse_args(["pretrain"])
    if ns.master_port is None:
        ns.master_port = script.master_port
    nproc = ns.nproc or devices or 1
    world = world_size(ns, nproc)
    composed = compose(stack, recipe, cfg, given, ws.hf_dir(cfg.model), world, extra)
    launch = launch_plan(ns, devices, worker=[str(source_dir / PROGRAM), *composed.argv])
    explicit = {item.partition("=")[0] for item in ns.env}
    env = dict(launch.env)  # launch's defaults and --env; the script's exports win over the defaults only
    env.update({k: v for k, v in composed.env.items() if k not in os.environ and k not in explicit})
    missing = missing_data(composed, cfg.model)
    if missing and not dry_run:
        raise NpuboxError(missing[0])
    return EnginePlan(stack, script, source_dir, composed, launch.torchrun_args, env, world, recipe, cfg, missing), ns


def render(plan: EnginePlan) -> str:
    """The command as a shell would run it: environment, torchrun's options, the program, then one flag a line."""
    head = [
        f"# {plan.stack.name} ({plan.stack.commit}): {plan.script.path}, world size {plan.world_size}",
        f"cd {shlex.quote(str(plan.source_dir))}",
    ]
    program_at = plan.torchrun_args.index(str(plan.program))
    command = [f"{k}={shlex.quote(v)}" for k, v in sorted(plan.env.items())] + ["torchrun"]
    command += [f"  {shlex.quote(a)}" for a in plan.torchrun_args[:program_at]]
    command.append(f"  {shlex.quote(str(plan.program))}")
    command += [f"    {shlex.join([name, *values])}" for _, flags in plan.composed.groups for name, values in flags]
    return "\n".join(head) + "\n" + " \\\n".join(command)


def metrics_of(log, plan: EnginePlan, peak_tflops: float | None, flops: float) -> EngineStepMetrics | None:
    if log.loss is None or not log.elapsed_ms:
        return None
    gbs = log.global_batch_size or plan.cfg.global_batch_size
    common = step_metrics(
        iteration=log.iteration,
        loss=log.loss,
        lr=log.learning_rate,
        grad_norm=log.grad_norm,
        step_time_s=log.elapsed_ms / 1000,
        tokens_per_step=gbs * plan.cfg.seq_length,
        flops=flops,
        world_size=plan.world_size,
        peak_tflops=peak_tflops,
        consumed_samples=log.consumed_samples or 0,
    )
    return EngineStepMetrics(
        **asdict(common),
        tflops_per_device=log.tflops_per_device,
        loss_scale=log.loss_scale,
        skipped_iterations=log.skipped_iterations,
        nan_iterations=log.nan_iterations,
    )


def stream(lines, plan: EnginePlan, peak_tflops: float | None, metrics_log) -> int:
    """Echo the engine's output and turn each iteration line into a metrics record; returns the records written."""
    flops = flops_per_step(plan.recipe, plan.cfg.seq_length, plan.cfg.global_batch_size, plan.cfg.tp)
    count = 0
    for line in lines:
        line = line.rstrip("\n")
        log = parse_line(line)
        m = metrics_of(log, plan, peak_tflops, flops) if log else None
        metrics_log.print(line)
        if m is not None:
            metrics_log.log(m)
            count += 1
    return count


def refuse_in_a_twin() -> None:
    """A CPU twin keeps its stack's engine in its spec (its command is checked there with --dry-run), but has no
    torch_npu: every worker would die importing it."""
    from llm.runtime_report import load_baked

    twin_of = ((load_baked() or {}).get("twin_of") or {}).get("env")
    if twin_of:
        raise NpuboxError(
            f"this image is the CPU twin of {twin_of}: its spec's engine, mindspeed-llm, trains with MindSpeed's NPU "
            "kernels (every worker imports torch_npu), which a twin does not have; train here with --engine mcore "
            "(npubox's loop on this stack's Megatron), or print the engine's command with --dry-run"
        )


def main(argv: list[str], launch_ns: argparse.Namespace | None = None) -> int:
    own, _ = split_extra(argv)
    if {"-h", "--help"} & set(own):
        print(engine_parser().format_help().replace("usage: ", "the mindspeed-llm engine's own options: ", 1))
    if launch_ns is None and "LOCAL_RANK" in os.environ:
        raise NpuboxError(
            "the mindspeed-llm engine starts torchrun itself: run `python -m llm pretrain` (or `llm launch "
            "pretrain`) once per node, not under torchrun"
        )
    dry_run = engine_parser().parse_known_args(own)[0].dry_run or bool(launch_ns is not None and launch_ns.dry_run)
    if not dry_run:
        refuse_in_a_twin()
    accel = None
    devices = launch_ns.nproc if launch_ns is not None and launch_ns.nproc else 0
    if not devices or not dry_run:  # this node's devices (torch_npu on Ascend), and their peak for MFU
        from llm.accel import detect

        accel = detect()
        devices = devices or accel.device_count
    plan, ns = make_plan(argv, launch_ns, devices, dry_run=dry_run)
    print(render(plan), file=sys.stderr, flush=True)
    if dry_run:
        for problem in plan.missing:
            print(f"missing: {problem}", file=sys.stderr)
        return 0
    if not plan.program.is_file():
        raise NpuboxError(
            f"{plan.program} not found: no {plan.stack.source} source at {plan.source_dir} "
            "(this image's spec names one; elsewhere pass --source-dir)"
        )

    with save_lock(plan.cfg.save, ns.node_rank == 0):
        return run_torchrun(plan, ns, accel)


def run_torchrun(plan: EnginePlan, ns: argparse.Namespace, accel) -> int:
    from llm.pretrain.metrics import MetricsLog

    train_iters = int(plan.composed.flags["--train-iters"][0])
    log = MetricsLog(plan.cfg.metrics_path, train_iters, 0, plan.cfg.log_interval, plan.cfg.progress)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *plan.torchrun_args],
        cwd=plan.source_dir,
        env={**os.environ, **plan.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )
    try:
        stream(proc.stdout, plan, accel.peak_tflops, log)
        code = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    finally:
        log.close()
    if code:
        print(f"error: {plan.stack.source} {PROGRAM} exited with {code} on node {ns.node_rank}", file=sys.stderr)
    return code
