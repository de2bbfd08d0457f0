"""msrun's command line as the stack's ``scripts/msrun_launcher.sh`` composes it: its default parameters (read from
the pinned script itself), the single-node form (worker count only) or the multi-node form (master, node rank), the
``--bind_core=True`` that later launchers put first (r1.8.0), and whether the launcher refuses a single worker
("You should use python instead of using msrun while running a single rank", r1.8.0)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llm.errors import NpuboxError

LAUNCHER = "scripts/msrun_launcher.sh"
DEFAULT_LINE = re.compile(r'^([A-Z_]+)=("?)([^"\s]*)\2\s*$')
NAMES = ("WORKER_NUM", "LOCAL_WORKER", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOG_DIR", "JOIN", "CLUSTER_TIME_OUT")


@dataclass(frozen=True)
class MsrunOptions:
    worker_num: int
    local_worker_num: int
    master_addr: str
    master_port: int
    node_rank: int
    log_dir: str
    join: str
    cluster_time_out: int
    bind_core: str | None = None  # the launcher's --bind_core value, when its msrun command sets one
    python_for_one: bool = False  # the launcher runs one worker as a plain `python` process, not under msrun


def launcher_defaults(source_dir: Path) -> MsrunOptions:
    """The ``# msrun Default Parameters`` block of the stack's launcher script."""
    path = Path(source_dir) / LAUNCHER
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NpuboxError(f"{path}: not found; expected the MindFormers source tree's msrun launcher") from None
    values = {}
    for line in text.splitlines():
        m = DEFAULT_LINE.match(line.strip())
        if m and m.group(1) in NAMES and m.group(1) not in values:
            values[m.group(1)] = m.group(3)
    missing = [n for n in NAMES if n not in values]
    if missing:
        raise NpuboxError(f"{path}: no default for {', '.join(missing)}; the launcher is not one the engine reads")
    bind_core = re.search(r'MSRUN_CMD="msrun --bind_core=(\w+)', text)
    return MsrunOptions(
        bind_core=bind_core.group(1) if bind_core else None,
        python_for_one="use python instead of using msrun" in text,
        worker_num=int(values["WORKER_NUM"]),
        local_worker_num=int(values["LOCAL_WORKER"]),
        master_addr=values["MASTER_ADDR"],
        master_port=int(values["MASTER_PORT"]),
        node_rank=int(values["NODE_RANK"]),
        log_dir=values["LOG_DIR"],
        join=values["JOIN"],
        cluster_time_out=int(values["CLUSTER_TIME_OUT"]),
    )


def msrun_argv(opts: MsrunOptions) -> list[str]:
    """``msrun --worker_num=...``: the launcher's single-node form when every worker is local, else its multi-node
    form, which adds the master address and this node's rank."""
    argv = ["msrun", *([f"--bind_core={opts.bind_core}"] if opts.bind_core else [])]
    argv += [f"--worker_num={opts.worker_num}", f"--local_worker_num={opts.local_worker_num}"]
    if opts.worker_num != opts.local_worker_num:
        argv.append(f"--master_addr={opts.master_addr}")
    argv.append(f"--master_port={opts.master_port}")
    if opts.worker_num != opts.local_worker_num:
        argv.append(f"--node_rank={opts.node_rank}")
    argv += [f"--log_dir={opts.log_dir}", f"--join={opts.join}", f"--cluster_time_out={opts.cluster_time_out}"]
    return argv
