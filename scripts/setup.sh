#!/usr/bin/env bash
# One-time host setup on Debian (as root), idempotent: Docker engine, debootstrap, a running
# dockerd, as root Slurm and munge (tests/integration/test_slurm.py starts its own Slurm from
# them), and the project's virtual environment (.venv): the host tools, the test tools (the `test`
# extra: pytest, testinfra, ruff) and, for the unit tests, the CPU image's locked stack (envs/cpu.lock).
# Uses this machine's own apt and pip configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "$(id -u)" = 0 ]; then  # the Slurm test runs as root only (slurmd starts each job as its user)
    { [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ]; } || need+=(slurm-wlm)
    [ -x /usr/sbin/munged ] || need+=(munge)
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: missing ${need[*]}; run this script as root (sudo) to install them" >&2
        exit 1
    fi
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

bash scripts/start-dockerd.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# The unit tests run the phases on the host against exactly the CPU image's pinned stack.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r envs/cpu.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
echo "setup done: .venv is ready, dockerd is running"
