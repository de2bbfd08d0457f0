#!/bin/sh
# The locked Python dependencies and the pinned sources, installed in a `docker run --network none` of the
# `os` stage with the build's deps/ folder mounted read-only at DIR (llm/env/deps_image.py commits the
# container): install-deps.sh DIR
#   DIR/build-tools.lock     setuptools and wheel, installed first (they build the few locked sdists)
#   DIR/requirements.lock    the lock, offline, --require-hashes
#   DIR/wheels/  DIR/site-wheels/  DIR/sources/manifest.tsv  DIR/install-sources.sh
set -eu
dir=$1
python3 -m venv /opt/venv
pip="/opt/venv/bin/python -m pip install --no-cache-dir --no-index --find-links $dir/wheels --no-deps"
for lock in build-tools.lock requirements.lock; do
    $pip --require-hashes --no-build-isolation -r "$dir/$lock"
done
if ls "$dir"/site-wheels/*.whl >/dev/null 2>&1; then $pip "$dir"/site-wheels/*.whl; fi
/opt/venv/bin/python -m pip check
sh "$dir/install-sources.sh" "$dir/sources/manifest.tsv"
# what pip and the builds of sdists left in /tmp and /root would be kept in the committed layer
rm -rf /tmp/* /root/.cache
