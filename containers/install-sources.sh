#!/bin/sh
# Unpack each pinned source tree (exported on the host at its commit) into /opt/npubox/sources
# and install it as the spec says. manifest.tsv: name commit install subdir into archive
set -eu
manifest=$1
dir=$(dirname "$manifest")
root=/opt/npubox/sources
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
            rm -rf "$root/$into"
            cp -a "$root/$name/$subdir" "$root/$into"
            echo "copied $name/$subdir into $into"
            ;;
        editable)
            /opt/venv/bin/python -m pip install --no-cache-dir --no-index --no-deps --no-build-isolation --use-pep517 -e "$root/$name"
            ;;
        pythonpath) ;;
        *) echo "unknown install method $install for $name" >&2; exit 1 ;;
    esac
done < "$manifest"
