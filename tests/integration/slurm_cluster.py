"""A real Slurm on this machine for a test: Debian's munged, a slurmctld and two slurmd node daemons on 127.0.0.1.

Everything lives in one temporary folder (a munge key made there, the config, state, spool, logs, sockets); the
daemons run in the foreground as this test's children on free ports, and are stopped by their PIDs. Two slurmd on one
host are two NodeNames with NodeHostname=localhost, NodeAddr=127.0.0.1 and a Port each, started `slurmd -N name`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "sinfo", "scancel")
DONE = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


def find(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def missing_programs() -> list[str]:
    return [p for p in DAEMONS + CLIENTS if find(p) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, ctld_port: int, nodes: dict[str, int]) -> str:
    lines = [
        "ClusterName=npubox-test",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root}/munge/socket",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool/%n",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.%n.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd.%n.log",
        # No cgroups here: processes tracked by process group, tasks not bound.
        "ProctrackType=proctrack/pgid",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ReturnToService=2",
        "SchedulerType=sched/builtin",
        "SelectType=select/cons_tres",
    ]
    lines += [
        f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs=1 State=UNKNOWN"
        for name, port in nodes.items()
    ]
    lines.append(f"PartitionName=test Nodes={','.join(nodes)} Default=YES MaxTime=30 State=UP")
    return "\n".join(lines) + "\n"


@dataclass
class SlurmCluster:
    root: Path
    node_names: tuple[str, ...] = ("node1", "node2")
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()

    def start(self, timeout: float = 60) -> SlurmCluster:
        for sub in ("munge", "state", "log", *(f"spool/{n}" for n in self.node_names)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged wants its socket's folders searchable by all
        key = self.root / "munge" / "munge.key"
        subprocess.run([find("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o600)
        munge = self.root / "munge"
        self._start(
            "munged",
            [find("munged"), "--foreground", "--force", f"--socket={munge}/socket", f"--key-file={key}"]
            + [f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/seed", f"--log-file={self.root}/log/munged.log"],
        )
        nodes = {name: free_port() for name in self.node_names}
        self.conf.write_text(slurm_conf(self.root, free_port(), nodes))
        self._start("slurmctld", [find("slurmctld"), "-D", "-f", str(self.conf)])
        for name in self.node_names:
            self._start(f"slurmd-{name}", [find("slurmd"), "-D", "-N", name, "-f", str(self.conf)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            states = self.client("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
            if states.count("idle") == len(self.node_names):
                return self
            time.sleep(0.5)
        raise AssertionError(f"Slurm's nodes were not idle within {timeout} s:\n{self.logs()}")

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise AssertionError(f"Slurm daemons exited: {dead}\n{self.logs()}")

    def client(
        self, program: str, *args: str, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [find(program), *args], env=self.env, capture_output=True, text=True, check=check, timeout=60, cwd=cwd
        )

    def submit(self, script: Path, *sbatch_options: str) -> str:
        proc = self.client("sbatch", "--parsable", *sbatch_options, str(script), cwd=script.parent)
        return proc.stdout.strip().split(";")[0]

    def job_state(self, job_id: str) -> str:
        out = self.client("scontrol", "show", "job", job_id, "--oneliner", check=False).stdout
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "UNKNOWN")

    def wait_for(self, job_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = self.job_state(job_id)
        while state not in DONE and time.monotonic() < deadline:
            time.sleep(1)
            state = self.job_state(job_id)
        return state

    def logs(self, tail: int = 30) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"== {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self, grace: float = 15) -> None:
        """Each daemon by its PID, the node daemons first: SIGTERM, then SIGKILL after ``grace`` seconds."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=grace)
