"""Resolve a spec's requirements into its lock file (every package pinned, with hashes)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from llm.atomic import atomic_path
from llm.env.site import Site
from llm.env.spec import LoadedSpec
from llm.errors import NpuboxError


def lock_command(loaded: LoadedSpec, requirements_in: Path, output: Path, site: Site) -> list[str]:
    return [
        sys.executable, "-m", "piptools", "compile",
        "--quiet", "--no-header", "--generate-hashes", "--allow-unsafe", "--strip-extras", "--no-emit-index-url",
        "--no-emit-find-links", "--no-emit-trusted-host", "--rebuild",
        "--output-file", str(output),
        *site.pip_find_links_args(),
        str(requirements_in),
    ]  # fmt: skip


def write_lock(loaded: LoadedSpec, site: Site, echo=print) -> Path:
    """Run pip-compile for the spec; the lock replaces the old one only when resolution succeeded."""
    want = loaded.spec.python
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if want != have:
        raise NpuboxError(
            f"{loaded.path}: the lock must be resolved with Python {want} (the image's), but this is Python {have}; "
            f"run `invoke lock` from a Python {want} environment"
        )
    with tempfile.TemporaryDirectory(prefix="npubox-lock-") as tmp:
        req_in = Path(tmp) / f"{loaded.name}.in"
        req_in.write_text("\n".join(loaded.spec.requirements) + "\n")
        with atomic_path(loaded.lock_path) as out:
            cmd = lock_command(loaded, req_in, out, site)
            echo(" ".join(cmd))
            proc = subprocess.run(cmd, text=True, capture_output=True)
            if proc.returncode != 0:
                raise NpuboxError(
                    f"resolving {loaded.path} failed (pip-compile exit {proc.returncode}): "
                    + (proc.stderr.strip().splitlines() or ["no output"])[-1]
                )
            text = out.read_text().replace(str(req_in), f"envs/{loaded.name}.yaml")
            header = (
                f"# Lock for envs/{loaded.name}.yaml: every package pinned with hashes.\n"
                f"# Regenerate with `invoke lock --env {loaded.name}`; builds install it with --require-hashes.\n"
            )
            out.write_text(header + text)
    return loaded.lock_path
