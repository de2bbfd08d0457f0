#!/usr/bin/env bash
# Start the Docker daemon if it is not running (as root). No bridge and no iptables: builds use
# no network at all, containers use --network none or host, so no container ever gets a
# private-range address.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: the Docker daemon is not running and starting it needs root" >&2
    exit 1
fi
log="${NPUBOX_DOCKERD_LOG:-/var/log/npubox-dockerd.log}"
nohup dockerd --bridge=none --iptables=false >"$log" 2>&1 &
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "dockerd is up (log: $log)"
        exit 0
    fi
    sleep 1
done
echo "error: dockerd did not come up within 60 s; see $log" >&2
tail -n 20 "$log" >&2
exit 1
