"""torchrun's command line for a phase: the launch options, the plan (torchrun's arguments and the workers'
environment) and the summary of failed ranks. `python -m llm launch` (:mod:`llm.launch`) and the engines that start
their own program under torchrun (:mod:`llm.pretrain.mindspeed_llm`) share it.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field

from llm.errors import NpuboxError

# What MindSpeed-LLM's launch scripts export (examples/mcore/*/pretrain_*.sh), and why.
DEFAULT_ENV: dict[str, str] = {
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",  # keeps TP communication ordered before compute (Megatron requires it)
    "HCCL_CONNECT_TIMEOUT": "1200",  # seconds HCCL waits for peers while building links (slow multi-node starts)
    "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True",  # less fragmentation in the NPU caching allocator
}


DEFAULT_MASTER_PORT = 6000
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what a shell (and `env`) accepts as a variable name


def parse_env_item(item: str, option: str = "--env") -> tuple[str, str]:
    """``KEY=VALUE`` of ``--env`` as (key, value); a missing ``=`` or a key no shell could name is refused."""
    key, sep, value = item.partition("=")
    if not sep or not ENV_NAME.fullmatch(key):
        raise NpuboxError(
            f"{option} {item!r}: expected KEY=VALUE with KEY made of letters, digits and '_', not starting with a "
            "digit (e.g. HCCL_CONNECT_TIMEOUT=1800)"
        )
    return key, value


@dataclass
class LaunchPlan:
    torchrun_args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set in this process before torchrun starts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm launch",
        description="Run `python -m llm <phase> ...` in one process per device on each node, through torchrun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--nproc", type=int, help="processes on this node; default: the NPUs/GPUs found, or 1 on CPU")
    a("--nnodes", default="1", help="number of nodes (c10d rendezvous also takes MIN:MAX)")
    a("--node-rank", type=int, default=0, help="this node's rank, 0..nnodes-1 (static launch)")
    a("--master-addr", default="127.0.0.1", help="address of node 0 (static launch)")
    a(
        "--master-port",
        type=int,
        help="port on node 0 (default 6000, as MindSpeed-LLM 2.0.0 "
        "examples/mcore/qwen25/pretrain_qwen25_7b_32k_ptd.sh; the mindspeed-llm engine: its example script's)",
    )
    a("--rdzv-endpoint", help="HOST:PORT of a c10d rendezvous; replaces --node-rank/--master-addr")
    a("--rdzv-id", default="npubox", help="job id shared by all nodes of one c10d rendezvous")
    a("--max-restarts", type=int, default=0, help="times torchrun restarts the workers after a failure")
    a("--socket-ifname", help="network interface for HCCL and gloo (exports HCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME)")
    a(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="set an environment variable for the workers (repeatable)",
    )
    a(
        "--heartbeat-timeout",
        type=float,
        default=30.0,
        help="seconds without a heartbeat after which a rank counts as lost and the others exit",
    )
    a("--log-dir", help="torchrun's per-rank log directory (default: output on this terminal)")
    a("--dry-run", action="store_true", help="print the torchrun command and environment, run nothing")
    a("phase", help="the phase each process runs (e.g. pretrain)")
    a("phase_args", nargs=argparse.REMAINDER, help="arguments for the phase")
    return p


def phase_args(ns: argparse.Namespace) -> list[str]:
    """The phase's arguments, without the ``--`` that may separate them from the launch options."""
    return ns.phase_args[1:] if ns.phase_args[:1] == ["--"] else ns.phase_args


def plan(ns: argparse.Namespace, devices_found: int, worker: list[str] | None = None) -> LaunchPlan:
    """torchrun's arguments and the workers' environment. ``worker``: what each process runs (default:
    ``-m llm <phase> <phase args>``; the mindspeed-llm engine gives its ``pretrain_gpt.py`` and flags)."""
    from llm.__main__ import PHASES

    if ns.phase not in PHASES or ns.phase in ("launch", "all"):
        raise NpuboxError(
            f"launch: unknown phase {ns.phase!r}; expected one of "
            f"{', '.join(p for p in PHASES if p not in ('launch', 'all'))}"
        )
    nproc = ns.nproc or devices_found or 1
    if nproc <= 0:
        raise NpuboxError(f"--nproc {ns.nproc}: expected a positive number of processes")
    args = [f"--nproc-per-node={nproc}", f"--nnodes={ns.nnodes}", f"--max-restarts={ns.max_restarts}"]
    if ns.rdzv_endpoint:
        if ":" not in ns.rdzv_endpoint:
            raise NpuboxError(f"--rdzv-endpoint {ns.rdzv_endpoint!r}: expected HOST:PORT")
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={ns.rdzv_endpoint}", f"--rdzv-id={ns.rdzv_id}"]
    else:
        try:
            nnodes = int(ns.nnodes)
        except ValueError:
            raise NpuboxError(
                f"--nnodes {ns.nnodes!r}: a static launch needs one number (MIN:MAX needs --rdzv-endpoint)"
            ) from None
        if not 0 <= ns.node_rank < nnodes:
            raise NpuboxError(f"--node-rank {ns.node_rank}: expected 0..{nnodes - 1} for --nnodes {nnodes}")
        port = ns.master_port or DEFAULT_MASTER_PORT
        args += [f"--node-rank={ns.node_rank}", f"--master-addr={ns.master_addr}", f"--master-port={port}"]
    if ns.log_dir:
        args += [f"--log-dir={ns.log_dir}", "--redirects=3", "--tee=3"]
    args += worker or ["-m", "llm", ns.phase, *phase_args(ns)]

    env = {k: v for k, v in DEFAULT_ENV.items() if k not in os.environ}
    env["NPUBOX_HEARTBEAT_TIMEOUT"] = str(ns.heartbeat_timeout)
    if ns.socket_ifname:
        env["HCCL_SOCKET_IFNAME"] = env["GLOO_SOCKET_IFNAME"] = ns.socket_ifname
    for item in ns.env:
        key, value = parse_env_item(item)
        env[key] = value
    return LaunchPlan(args, env)


def failure_summary(error) -> str:
    """One line per failed rank from torchrun's ChildFailedError."""
    lines = []
    for rank, failure in sorted(error.failures.items()):
        lines.append(f"rank {rank} (local rank {failure.local_rank}, pid {failure.pid}) exited with {failure.exitcode}")
    return "; ".join(lines) or str(error)
