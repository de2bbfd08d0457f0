#!/bin/sh
# Unpack each pinned source tree (exported on the host at its commit) into /opt/npubox/sources,
# record its commit beside it (<name>.commit: images carry no .git), install it as the spec says,
# and compile Megatron's dataset helpers wherever Megatron's tree lands (its own Makefile; a
# read-only container cannot compile them at run time). manifest.tsv: name commit install subdir into archive
set -eu
manifest=$1
dir=$(dirname "$manifest")
root=/opt/npubox/sources
venv=/opt/venv
mkdir -p "$root"
tab=$(printf '\t')
while IFS="$tab" read -r name commit install subdir into archive; do
    mkdir -p "$root/$name"
    tar -xf "$dir/$archive" -C "$root/$name" --strip-components=1
    echo "$commit" > "$root/$name.commit"
    echo "source $name at $commit ($install)"
done < "$manifest"
while IFS="$tab" read -r name commit install subdir into archive; do
    case "$install" in
        copy-into)
            rm -rf "${root:?}/$into"
            cp -a "$root/$name/$subdir" "$root/$into"
            echo "copied $name/$subdir into $into"
            ;;
        editable)
            # CI_BUILD=1: MindSpeed's setup.py would otherwise `pip install -r requirements.txt` (the lock has them).
            CI_BUILD=1 "$venv/bin/python" -m pip install --no-cache-dir --no-index --no-deps --no-build-isolation \
                --use-pep517 -e "$root/$name"
            ;;
        pythonpath) ;;
        *) echo "unknown install method $install for $name" >&2; exit 1 ;;
    esac
done < "$manifest"
for makefile in "$root"/*/megatron/core/datasets/Makefile "$root"/*/*/megatron/core/datasets/Makefile; do
    [ -f "$makefile" ] || continue
    helpers=$(dirname "$makefile")
    if ! command -v make >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
        echo "compiling Megatron's dataset helpers in $helpers needs make and a C++ compiler in the base image" >&2
        exit 1
    fi
    suffix=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    PATH="$venv/bin:$PATH" make -C "$helpers" LIBEXT="$suffix"
    ls "$helpers"/helpers*"$suffix" >/dev/null
    echo "compiled Megatron's dataset helpers in $helpers"
done
