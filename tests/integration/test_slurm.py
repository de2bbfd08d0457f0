"""The sbatch script `invoke manifest --env cpu --target slurm --nodes 2` renders, run by a real Slurm (a slurmctld and
two slurmd on 127.0.0.1, tests/integration/slurm_cluster.py): each node's `invoke run` starts the sealed CPU container
(not root, no capabilities, no new privileges, a read-only root, the host's network and no other), the 2-node pretrain
of the tiny model finishes, and its checkpoint resumes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import invoke
from .slurm_cluster import DONE, SlurmCluster, free_port, missing_programs

ITERS = 4
PRETRAIN = [
    *("--load", "/workspace/checkpoints/tiny/hf-tp1-pp1", "--save", "/workspace/checkpoints/tiny/slurm run"),
    *("--train-iters", str(ITERS), "--micro-batch-size", "2", "--global-batch-size", "8"),
    *("--metrics", "/workspace/logs/slurm.jsonl", "--no-progress"),
]
# Read inside each node's container while it trains: who runs pid 1, its capabilities, the root mount, the network.
PROBE = "cat /proc/1/status; echo ROOT $(awk '$2 == \"/\" {print $4}' /proc/1/mounts); echo NET; cat /proc/1/net/dev"


@pytest.fixture
def slurm(tmp_path_factory):
    missing = missing_programs()
    if missing or os.geteuid() != 0:
        why = f"missing {', '.join(missing)} (apt-get install slurm-wlm munge)" if missing else "slurmd runs as root"
        if os.environ.get("CI"):
            pytest.fail(f"CI: a real Slurm is needed here: {why}; scripts/setup.sh installs it")
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def interfaces(net_dev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in net_dev.splitlines() if ":" in line}


def probe(container_id: str) -> dict | None:
    """What the container's pid 1 is, read from inside; None when it is gone already."""
    proc = subprocess.run(["docker", "exec", container_id, "sh", "-c", PROBE], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    status, _, net = proc.stdout.partition("\nNET\n")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line and not line.startswith("ROOT"))
    root = next(line.split()[1] for line in status.splitlines() if line.startswith("ROOT "))
    return {
        "uid": fields["Uid"].split(),
        "cap_eff": fields["CapEff"].strip(),
        "cap_bnd": fields["CapBnd"].strip(),
        "no_new_privs": fields["NoNewPrivs"].strip(),
        "root_options": root.split(","),
        "interfaces": interfaces(net),
    }


def containers_on(workspace: Path) -> list[str]:
    """npubox containers (of any worktree on this engine) whose workspace mount is ``workspace``."""
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", "label=npubox.managed=true"], capture_output=True, text=True
    ).stdout.split()
    out = []
    for container_id in ids:
        mounts = subprocess.run(
            ["docker", "inspect", "--format", "{{json .Mounts}}", container_id], capture_output=True, text=True
        ).stdout
        if mounts.strip() and any(m.get("Source") == str(workspace) for m in json.loads(mounts)):
            out.append(container_id)
    return out


def test_the_slurm_script_runs_the_sealed_pretrain_on_two_nodes_and_it_resumes(cpu_image, slurm, tmp_path):
    started = time.monotonic()
    ws = tmp_path / "workspace"  # npubox creates it (for uid 1000 when root runs)
    for phase in ("sample", "convert", "preprocess"):
        proc = invoke("run", "--model", "tiny", "--phase", phase, "--workspace", str(ws))
        assert proc.returncode == 0, proc.stderr[-3000:]
    script = tmp_path / "pretrain.sbatch"
    rendered = invoke(
        *("manifest", "--env", "cpu", "--target", "slurm", "--nodes", "2", "--workspace", str(ws)),
        *("--master-port", str(free_port()), "--output", str(script), "--", *PRETRAIN),
    )
    assert rendered.returncode == 0, rendered.stderr
    prepared = time.monotonic()

    job = slurm.submit(script, "--time=15", f"--output={tmp_path}/job-%j.out")
    seen: dict[str, dict] = {}
    try:
        deadline = time.monotonic() + 900
        state = slurm.job_state(job)
        while state not in DONE and time.monotonic() < deadline:
            slurm.check_alive()
            for container_id in containers_on(ws):
                if container_id not in seen and (found := probe(container_id)):
                    seen[container_id] = found
            time.sleep(1)
            state = slurm.job_state(job)
    finally:
        if slurm.job_state(job) not in DONE:  # each node's invoke run stops its container (docker stop)
            slurm.client("scancel", job, check=False)
            slurm.wait_for(job, timeout=180)
    output = (tmp_path / f"job-{job}.out").read_text(errors="replace")
    assert state == "COMPLETED", f"job {job}: {state}\n{output[-6000:]}\n{slurm.logs()}"
    slurm_seconds = time.monotonic() - prepared

    # Both nodes composed the sealed run with npubox's own `invoke run` (srun --label: "0: ", "1: ").
    for node in ("0", "1"):
        docker_line = next(line for line in output.splitlines() if line.startswith(f"{node}: + docker run "))
        flags = docker_line.split()
        pairs = set(zip(flags, flags[1:]))
        assert {("--network", "host"), ("--cap-drop", "ALL"), ("--security-opt", "no-new-privileges")} <= pairs
        assert "--read-only" in flags and "--privileged" not in docker_line, docker_line
    # ... and both containers were sealed, seen from inside.
    assert len(seen) == 2, (seen, output[-3000:])
    host_interfaces = interfaces(Path("/proc/net/dev").read_text())
    for found in seen.values():
        assert "0" not in found["uid"], found
        assert found["cap_eff"] == found["cap_bnd"] == "0000000000000000", found
        assert found["no_new_privs"] == "1", found
        assert "ro" in found["root_options"], found
        assert found["interfaces"] == host_interfaces, found

    save = ws / "checkpoints/tiny/slurm run"
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == str(ITERS)
    metrics = [json.loads(line) for line in (ws / "logs/slurm.jsonl").read_text().splitlines() if line.strip()]
    assert [m["iteration"] for m in metrics if "loss" in m] == list(range(1, ITERS + 1))

    resume = [
        a if a != "/workspace/checkpoints/tiny/hf-tp1-pp1" else "/workspace/checkpoints/tiny/slurm run"
        for a in PRETRAIN
    ]
    resume[resume.index("--train-iters") + 1] = str(ITERS + 2)
    proc = invoke(
        "run", "--model", "tiny", "--phase", "pretrain", "--workspace", str(ws), "--nproc", "2", "--", *resume
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resuming at step {ITERS}" in proc.stdout + proc.stderr
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == str(ITERS + 2)
    for container_id, found in seen.items():
        print(
            f"container {container_id[:12]}: uid {found['uid'][1]}, CapEff {found['cap_eff']}, NoNewPrivs "
            f"{found['no_new_privs']}, root {found['root_options'][0]}, interfaces {sorted(found['interfaces'])}"
        )
    print(f"slurm test: {prepared - started:.0f} s preparing, {slurm_seconds:.0f} s the 2-node Slurm job")
