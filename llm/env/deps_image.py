"""The image's locked Python dependencies and pinned sources, installed by `docker run` + `docker commit` rather
than by a Dockerfile step: the classic builder (Debian's docker.io has no BuildKit) can only reach the wheels
through a COPY, which keeps them in a layer, and its multi-stage copy of the virtual environment stores it a
second time. A twin's venv is 5-9 GB: two copies and the wheels' layer did not fit a CI machine's disk.

Here the `os` stage (built by `docker build --target os`) runs containers/install-deps.sh with the context's
deps/ folder mounted read-only and no network; the container is committed as DEPS_IMAGE, the Dockerfile's
`installed` stage, tagged by a digest of everything that goes in, so an unchanged lock and sources are not
installed twice (Docker's own layer cache, for these steps)."""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
import subprocess
from pathlib import Path

from llm.digest import sha256_file
from llm.env.engine import Echo, docker, docker_binary, image_exists, inspect_image
from llm.errors import NpuboxError

MOUNT = "/mnt"  # where the deps/ folder is mounted: an empty folder of the base, so the commit adds no mount point
SCRIPT = "install-deps.sh"


def deps_key(os_image_id: str, deps: Path) -> str:
    """What the installed venv and sources follow from: the `os` stage, and every file of deps/ (a wheel by its
    name and size: the lock, hashed in here too, names its sha256, which pip checks with --require-hashes)."""
    digest = hashlib.sha256(os_image_id.encode() + b"\0")
    for path in sorted(p for p in deps.rglob("*") if p.is_file()):
        rel = path.relative_to(deps).as_posix()
        digest.update(rel.encode() + b"\0")
        if rel.startswith("wheels/"):
            digest.update(str(path.stat().st_size).encode() + b"\0")
        else:
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def deps_image(repo: str, os_image_id: str, deps: Path, *, echo: Echo | None, what: str, hint: str) -> str:
    """The tag of ``repo``'s DEPS_IMAGE for these inputs, installed and committed now unless it exists. Older
    tags of ``repo`` are dropped (their layers stay while an image is built on them)."""
    tag = f"{repo}:{deps_key(os_image_id, deps)[:16]}"
    if image_exists(tag):
        if echo:
            echo(f"# the lock and the sources are installed already: {tag}")
        return tag
    name = f"npubox-deps-{secrets.token_hex(6)}"
    config = inspect_image(os_image_id)["Config"]
    # as a Dockerfile RUN step: past the base's entrypoint, if it has one, which the commit then gives back
    entrypoint = ["--entrypoint", "sh"] if config.get("Entrypoint") else []
    command = [] if entrypoint else ["sh"]
    run = ["run", "--name", name, "--network", "none", *entrypoint, "--volume", f"{deps}:{MOUNT}:ro", os_image_id]
    run += [*command, f"{MOUNT}/{SCRIPT}", MOUNT]
    previous = signal.signal(signal.SIGTERM, _interrupt)  # so that the finally below removes the container
    try:
        docker(run, echo=echo, what=f"installing the lock and the sources of {what}", hint=hint)
        changes = [f"CMD {json.dumps(config.get('Cmd') or [])}"]
        changes += [f"ENTRYPOINT {json.dumps(config['Entrypoint'])}"] if entrypoint else []
        commit = ["commit", *(a for change in changes for a in ("--change", change)), name, tag]
        docker(commit, echo=echo, capture=True, what=f"committing the installed deps of {what}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        subprocess.run([docker_binary(), "rm", "--force", name], capture_output=True)  # the container we started
    _drop_older_tags(repo, tag)
    return tag


def _interrupt(signum, _frame) -> None:
    raise NpuboxError(f"{signal.Signals(signum).name}: the build was stopped; nothing was committed")


def _drop_older_tags(repo: str, keep: str) -> None:
    listed = docker(["images", repo, "--format", "{{.Repository}}:{{.Tag}}"], echo=None, capture=True, check=False)
    for ref in listed.stdout.split():
        if ref != keep and ref.startswith(f"{repo}:"):
            docker(["rmi", ref], echo=None, capture=True, check=False)
