"""What a node of a rendered job runs, found by running the job's own text: a Kubernetes pod's command expanded as
kubelet and bash would, an sbatch script run with stand-ins for srun and scontrol, and what `invoke run` makes of a
Slurm node's command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def kubelet_expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of command and args (kubernetes third_party/forked/golang/expansion/expand.go):
    `$$` is `$`, `$(VAR)` is VAR's value when the container defines it, anything else stays."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), arg)


def pod_argv(container: dict, env: dict[str, str]) -> list[str]:
    """What the pod's container execs, with `exec` swapped for printf."""
    command = [kubelet_expand(a, env) for a in container["command"] + container["args"]]
    assert command[:2] == ["/bin/bash", "-c"] and command[2].startswith("exec ")
    command[2] = "printf '%s\\n' " + command[2].removeprefix("exec ")
    out = subprocess.run(command, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


STAND_INS = {
    # scontrol: the job's first host, and the address Slurm reaches it at.
    "scontrol": """#!/bin/bash
case "$1 $2" in
  "show hostnames") printf 'nodeA\\nnodeB\\n' ;;
  "show node") echo "   NodeAddr=10.1.2.3 NodeHostName=$3 Version=22.05.8" ;;
esac
""",
    # srun: each node's task, one after the other, with that node's SLURM_NODEID; srun's own options dropped.
    "srun": """#!/bin/bash
while [[ $1 == --* ]]; do shift; done
for node in 0 1; do SLURM_NODEID=$node "$@" || exit $?; done
""",
    # npubox's python on the node: record its argv, one file per node.
    "npubox-python": """#!/bin/bash
printf '%s\\n' "$@" > "$RECORD/node-$SLURM_NODEID"
""",
}


def run_script(text: str, tmp_path: Path) -> dict[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[A-B]",
        "SLURM_SUBMIT_DIR": "/shared/project",
        "NPUBOX_PYTHON": str(bin_dir / "npubox-python"),
        "NPUBOX_DIR": "/shared/npubox",
        "RECORD": str(tmp_path),
    }
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, text=True)
    return {n: (tmp_path / f"node-{n}").read_text().splitlines() for n in (0, 1)}


def node_run_call(node_argv: list[str], monkeypatch) -> tuple[tuple, dict]:
    """The arguments tasks.py's `run` hands commands.run_phase, given a Slurm node's `-m invoke --search-root DIR
    run ...` through Invoke's own parser (run_phase itself replaced)."""
    from invoke import Program

    import tasks
    from llm.env import commands

    assert node_argv[:3] == ["-m", "invoke", "--search-root"] and node_argv[4] == "run"
    calls = []
    monkeypatch.setattr(commands, "run_phase", lambda *a, **k: calls.append((a, k)) or 0)
    for task in tasks.ns.tasks.values():  # Invoke pops each option's help from the task as it parses
        monkeypatch.setattr(task, "help", dict(task.help))
    argv = ["invoke", *node_argv[4:]]
    monkeypatch.setattr(sys, "argv", argv)  # tasks.args_after_dashes reads the arguments after -- from here
    Program(namespace=tasks.ns).run(argv, exit=False)
    ((args, kwargs),) = calls
    return args, kwargs
