"""The MindFormers stack an image holds: its release's guide, its source tree, and how the stack's own scripts are
run (an argv list, in the source tree, with the environment the guide's launcher sets).

The stack is the image's (its baked spec's ``mindformers`` source commit, unpacked under ``$NPUBOX_SOURCES``);
``--stack COMMIT`` and ``--source-dir DIR`` name another (tests, plans outside an image). On a CPU (the twin) the
scripts also get :mod:`llm.mindformers.cpu`'s shims."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llm.errors import NpuboxError
from llm.mindformers.guides import SOURCE_NAME, Guide, guide_for_commit
from llm.runtime_report import SOURCES_ROOT, load_baked

DEVICE_TARGETS = ("Ascend", "CPU")


@dataclass(frozen=True)
class Stack:
    guide: Guide
    source_dir: Path
    device_target: str  # MindSpore's: Ascend on an NPU image, CPU in a twin

    @property
    def on_cpu(self) -> bool:
        return self.device_target == "CPU"

    def env(self) -> dict[str, str]:
        """What the guide's scripts need on top of the caller's environment: the source root on PYTHONPATH (as
        scripts/msrun_launcher.sh exports $MF_SCRIPTS_ROOT/../), on a CPU the shims' folder first; MindFormers'
        output and log folders (default ./output, in the read-only source tree) in the workspace's logs/."""
        from llm.mindformers.cpu import SHIMS_DIR
        from llm.workspace import Workspace

        paths = [str(SHIMS_DIR)] if self.on_cpu else []
        paths += [str(self.source_dir), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
        output = Workspace.from_env().logs / "mindformers"
        return {
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in paths if p)),
            "LOCAL_DEFAULT_PATH": str(output),
            "LOG_MF_PATH": str(output / "log"),
        }


def add_stack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", help="MindFormers source commit (default: the image's spec)")
    p.add_argument("--source-dir", type=Path, help="MindFormers source tree (default: the image's, in $NPUBOX_SOURCES)")
    p.add_argument(
        "--device-target",
        choices=DEVICE_TARGETS,
        help="MindSpore's device target (default: Ascend on an NPU image, CPU in a CPU twin)",
    )


def baked_spec() -> dict:
    return (load_baked() or {}).get("spec") or {}


def resolve_stack(ns: argparse.Namespace) -> Stack:
    spec = baked_spec()
    commit = ns.stack
    if commit is None:
        commit = next((s["commit"] for s in spec.get("sources") or [] if s.get("name") == SOURCE_NAME), None)
        if commit is None:
            raise NpuboxError(
                f"the image's spec has no {SOURCE_NAME} source, which this phase runs on a MindFormers stack; "
                "use a MindFormers image, or --stack COMMIT with --source-dir DIR"
            )
    guide = guide_for_commit(commit)
    source_dir = ns.source_dir or SOURCES_ROOT / SOURCE_NAME
    if not (source_dir / guide.workdir / guide.program).is_file():
        raise NpuboxError(
            f"{source_dir / guide.workdir / guide.program}: not found; expected MindFormers {guide.release}'s "
            "source tree (--source-dir)"
        )
    target = ns.device_target or ("CPU" if spec.get("accelerator") == "cpu" else "Ascend")
    return Stack(guide, source_dir, target)


def run_script(stack: Stack, argv: list[str], what: str, cwd: Path | None = None) -> None:
    """Run one of the stack's scripts (``argv[0]`` a path in the source tree, or ``-c``), echoing it; a failure
    becomes one sentence naming the script and its exit status (its own output is above it)."""
    command = [sys.executable, *argv]
    env = stack.env()
    print(f"+ PYTHONPATH={shlex.quote(env['PYTHONPATH'])} {shlex.join(['python', *argv])}", file=sys.stderr, flush=True)
    proc = subprocess.run(command, cwd=cwd or stack.source_dir, env={**os.environ, **env})
    if proc.returncode != 0:
        raise NpuboxError(f"{what} failed: MindFormers {stack.guide.release}'s {argv[0]} exited {proc.returncode}")
