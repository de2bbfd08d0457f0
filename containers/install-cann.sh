#!/bin/sh
# Install CANN from the vendor .run files listed in <dir>/order.txt with their documented
# command line, then check the installed version. `--check-only VERSION` checks a CANN that the
# base image brings.
set -eu
ASCEND=/usr/local/Ascend

installed_version() {
    for f in "$ASCEND"/ascend-toolkit/latest/version.info "$ASCEND"/ascend-toolkit/latest/*-linux/ascend_toolkit_install.info; do
        if [ -f "$f" ]; then
            sed -n 's/^[Vv]ersion=//p' "$f" | head -n 1
            return 0
        fi
    done
    return 1
}

check() {
    found="$(installed_version || true)"
    if [ "$found" != "$1" ]; then
        echo "CANN: the spec pins $1, the image has ${found:-no CANN toolkit under $ASCEND/ascend-toolkit/latest}" >&2
        exit 1
    fi
    if [ ! -f "$ASCEND/ascend-toolkit/set_env.sh" ]; then
        echo "CANN $1: $ASCEND/ascend-toolkit/set_env.sh is missing" >&2
        exit 1
    fi
    echo "CANN $found at $ASCEND/ascend-toolkit/latest"
}

if [ "$1" = "--check-only" ]; then
    check "$2"
    exit 0
fi

dir=$1
version=$2
mkdir -p "$ASCEND"
while IFS= read -r run; do
    [ -n "$run" ] || continue
    echo "installing $run"
    chmod +x "$dir/$run"
    "$dir/$run" --install --quiet --install-for-all --install-path="$ASCEND"
done < "$dir/order.txt"
check "$version"
