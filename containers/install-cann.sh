#!/bin/sh
# The CANN stage: install-cann.sh MODE VERSION DIR OUT SET_ENV...
#   none        no CANN: make an empty OUT
#   base        the base image brings CANN: check its version and its set_env.sh scripts
#   installers  run the vendor .run files listed in DIR/order.txt with their documented command
#               line into /usr/local/Ascend, check, and move the tree to OUT (the next stage copies
#               OUT to /usr/local/Ascend, so the installers themselves never reach a kept layer)
set -eu
ASCEND=/usr/local/Ascend
mode=$1 version=$2 dir=$3 out=$4
shift 4

installed_version() {
    # The toolkit's version file: ascend-toolkit/latest up to CANN 8.3, cann/ from 8.5.
    for home in "$ASCEND"/ascend-toolkit/latest "$ASCEND"/cann; do
        for f in "$home"/version.info "$home"/*-linux/ascend_toolkit_install.info; do
            if [ -f "$f" ]; then
                sed -n 's/^[Vv]ersion=//p' "$f" | head -n 1
                return 0
            fi
        done
    done
    return 1
}

check() {
    found="$(installed_version || true)"
    if [ "$found" != "$version" ]; then
        echo "CANN: the spec pins $version, the image has ${found:-no CANN toolkit under $ASCEND}" >&2
        exit 1
    fi
    for script in "$@"; do
        if [ ! -f "$script" ]; then
            echo "CANN $version: $script is missing (the spec's cann.set_env lists it)" >&2
            exit 1
        fi
    done
    echo "CANN $found at $ASCEND; set_env: $*"
}

case "$mode" in
    none)
        mkdir -p "$out"
        ;;
    base)
        check "$@"
        mkdir -p "$out"
        ;;
    installers)
        mkdir -p "$ASCEND"
        while IFS= read -r run; do
            [ -n "$run" ] || continue
            echo "installing $run"
            chmod +x "$dir/$run"
            "$dir/$run" --install --quiet --install-for-all --install-path="$ASCEND"
        done < "$dir/order.txt"
        check "$@"
        mkdir -p "$(dirname "$out")"
        mv "$ASCEND" "$out"
        ;;
    *)
        echo "install-cann.sh: unknown mode $mode (none, base, installers)" >&2
        exit 1
        ;;
esac
