"""The sbatch script: on each node of the allocation, srun starts npubox's own `invoke run` with that node's rank,
which composes the sealed `docker run` there, exactly as typing `invoke run --nnodes N --node-rank R --master-addr A`
on that node would: its devices found on that node, the same flags, the same refusals. No second `docker run` is
written here.

What each node needs: Docker, the env's image (`invoke build-image`, or `invoke import-image` of an exported archive),
this npubox checkout with its virtual environment (``NPUBOX_DIR``, ``NPUBOX_PYTHON``) and the workspace at the same
path (a shared filesystem).
"""

from __future__ import annotations

import shlex
import sys

from llm.env.labels import REPO_ROOT
from llm.manifest.job import DEVICE_RESOURCES, Job

# What runs on each node: the node's rank from srun (one task per node), node 0's address from the batch step.
# The job's own options come after it as arguments, never through a shell.
NODE_SCRIPT = (
    'exec "$NPUBOX_PYTHON" -m invoke --search-root "$NPUBOX_DIR" run --node-rank "$SLURM_NODEID" '
    '--master-addr "$MASTER_ADDR" "$@"'
)


def run_argv(job: Job) -> list[str]:
    """`invoke run`'s options that are the same on every node. Without a workspace, `invoke run`'s own default
    applies on each node: ./workspace of the job's working folder (where sbatch was run), or $NPUBOX_HOST_WORKSPACE."""
    argv = ["--env", job.env, "--model", job.model, "--phase", job.phase]
    argv += ["--workspace", job.workspace] if job.workspace else []
    argv += job.launch.job_argv(env_option="--launch-env") + ["--master-port", str(job.launch.master_port)]
    return argv + (["--", *job.extra_args] if job.extra_args else [])


def render_slurm(job: Job, npubox_dir: str | None = None, npubox_python: str | None = None) -> str:
    """The script; ``npubox_dir`` / ``npubox_python``: where the nodes find npubox (default: this checkout and
    interpreter; the job's environment may override both)."""
    npubox_dir = npubox_dir or str(REPO_ROOT)
    npubox_python = npubox_python or sys.executable
    resource = DEVICE_RESOURCES[job.accelerator]
    devices = f"every {resource} device the node has" if resource else "no accelerator (cpu)"
    run_args = " ".join(shlex.quote(a) for a in run_argv(job))
    return f"""#!/bin/bash
#SBATCH --job-name={job.name}
#SBATCH --nodes={job.nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
# npubox env {job.env}: on each node `invoke run` starts the sealed container with {devices}.
# Each node needs Docker, the env's image (invoke build-image / import-image), npubox at NPUBOX_DIR and the
# workspace at the same path (a shared filesystem).
set -euo pipefail

NPUBOX_DIR=${{NPUBOX_DIR:-{shlex.quote(npubox_dir)}}}
NPUBOX_PYTHON=${{NPUBOX_PYTHON:-{shlex.quote(npubox_python)}}}
MASTER_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
# The address Slurm reaches node 0 at (NodeAddr, the node's name unless slurm.conf gives another).
MASTER_ADDR=$(scontrol show node "$MASTER_NODE" | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')
MASTER_ADDR=${{MASTER_ADDR:-$MASTER_NODE}}
export NPUBOX_DIR NPUBOX_PYTHON MASTER_ADDR

RUN_ARGS=({run_args})
srun --nodes={job.nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 --label \\
  bash -c {shlex.quote(NODE_SCRIPT)} npubox-node "${{RUN_ARGS[@]}}"
"""
