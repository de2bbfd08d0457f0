"""Pinned source checkouts (MindSpeed, Megatron-LM, MindSpeed-LLM, ...): found in a source cache
or fetched from their git URL on the host, exported at exactly the pinned commit.

A source cache is a folder holding, per source, a git repository or mirror named `<name>.git` or
`<name>`, or an archive named by commit: `<name>-<commit>.tar[.gz]`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from llm.env.engine import Echo, _stderr_echo
from llm.env.site import cache_dir
from llm.env.spec import Source
from llm.errors import NpuboxError


@dataclass(frozen=True)
class Located:
    kind: str  # "repo", "archive" or "url"
    path: Path | None
    where: str


def _git(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def _archive(src: Source, directory: Path) -> Path | None:
    for suffix in (".tar.gz", ".tgz", ".tar"):
        candidate = directory / f"{src.name}-{src.commit}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _repo(src: Source, directory: Path) -> Path | None:
    for name in (f"{src.name}.git", src.name):
        candidate = directory / name
        if candidate.is_dir() and _git(["rev-parse", "--git-dir"], cwd=candidate).returncode == 0:
            return candidate
    return None


def locate(src: Source, source_cache: Path | None) -> Located:
    """Where the pinned source will come from (no network used)."""
    for directory in [d for d in (source_cache, cache_dir() / "sources") if d is not None]:
        archive = _archive(src, directory)
        if archive:
            return Located("archive", archive, str(archive))
        repo = _repo(src, directory)
        if repo:
            return Located("repo", repo, str(repo))
    return Located("url", None, src.url)


def has_commit(repo: Path, commit: str) -> bool:
    return _git(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo).returncode == 0


def check_commit_object(src: Source, repo: Path, where: str) -> None:
    """The pin must name a commit object: a tag object's SHA (what `git rev-parse <tag>` gives for an
    annotated tag) is refused with the commit it points to (`git rev-parse <tag>^{commit}`)."""
    kind = _git(["cat-file", "-t", src.commit], cwd=repo).stdout.strip()
    if kind == "commit":
        return
    if kind == "tag":
        tag = _git(["cat-file", "-p", src.commit], cwd=repo).stdout
        name = next((line.split(" ", 1)[1] for line in tag.splitlines() if line.startswith("tag ")), "?")
        target = _git(["rev-parse", f"{src.commit}^{{commit}}"], cwd=repo).stdout.strip()
        raise NpuboxError(
            f"source {src.name}: {src.commit} is the tag object of {name!r}, not a commit; pin the "
            f"commit it points to: {target}"
        )
    raise NpuboxError(f"source {src.name}: commit {src.commit} does not exist in {where}")


def fetch_mirror(src: Source, echo: Echo | None = _stderr_echo) -> Path:
    mirror = cache_dir() / "sources" / f"{src.name}.git"
    if mirror.is_dir():
        cmd = ["git", "-C", str(mirror), "fetch", "--quiet", "--prune", "origin"]
    else:
        mirror.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["git", "clone", "--quiet", "--mirror", src.url, str(mirror)]
    if echo:
        echo(" ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        if not mirror.is_dir() or not has_commit(mirror, src.commit):
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "git failed"
            raise NpuboxError(
                f"source {src.name}: cannot fetch {src.url} ({why}); put a mirror ({src.name}.git) or an archive "
                f"({src.name}-{src.commit}.tar.gz) in the source cache (--source-cache)"
            )
    return mirror


def export_source(src: Source, source_cache: Path | None, out_dir: Path, echo: Echo | None = _stderr_echo) -> Path:
    """Write `<out_dir>/<name>.tar` holding the tree at the pinned commit under `<name>/`."""
    located = locate(src, source_cache)
    out = out_dir / f"{src.name}.tar"
    if located.kind == "archive":
        shutil.copy2(located.path, out_dir / located.path.name)
        return out_dir / located.path.name
    repo = located.path if located.kind == "repo" else fetch_mirror(src, echo=echo)
    check_commit_object(src, repo, located.where)
    proc = _git(["archive", "--format=tar", f"--prefix={src.name}/", "-o", str(out), src.commit], cwd=repo)
    if proc.returncode != 0:
        raise NpuboxError(f"source {src.name}: git archive of {src.commit} failed: {proc.stderr.strip()}")
    return out
