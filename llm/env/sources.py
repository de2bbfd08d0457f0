"""Pinned source checkouts (MindSpeed, Megatron-LM, MindSpeed-LLM, ...): found in a source cache
or fetched from their git URL on the host, exported at exactly the pinned commit.

A source cache is a folder holding, per source, a git repository or mirror named `<name>.git` or
`<name>`, or an archive named by commit: `<name>-<commit>.tar[.gz]`.

An archive's name proves nothing: before it is built it must show its content is the pinned commit's,
by what it carries and what the site ships beside it (:func:`verify_archive`): the commit id `git archive`
writes into every archive it makes (`git get-tar-commit-id`), and a `SHA256SUMS` file beside the archives
(`sha256sum` format). Whatever is there is checked and must match; an archive with neither is refused
unless the build says `--allow-unverified-sources`, and the image's `npubox.sources.unverified` label
then names it.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from llm.digest import sha256_file
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


CHECKSUMS = "SHA256SUMS"
CHECKSUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def tar_commit_id(archive: Path) -> str | None:
    """The commit id `git archive` wrote into ``archive`` (its first pax header), or None when it has none."""
    opener = gzip.open if archive.name.endswith((".gz", ".tgz")) else open
    try:
        with opener(archive, "rb") as f:
            head = f.read(1024)
    except (OSError, EOFError) as e:
        raise NpuboxError(f"source archive {archive}: cannot be read ({e})") from None
    proc = subprocess.run(["git", "get-tar-commit-id"], input=head, capture_output=True)
    commit = proc.stdout.decode(errors="replace").strip()
    return commit if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def listed_sha256(archive: Path) -> str | None:
    """The sha256 that the `SHA256SUMS` beside ``archive`` gives it, or None (no such file, or not listed)."""
    sums = archive.parent / CHECKSUMS
    if not sums.is_file():
        return None
    for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
        m = CHECKSUM_LINE.match(line.strip())
        if m and Path(m.group(2)).name == archive.name:
            return m.group(1).lower()
    return None


def verify_archive(src: Source, archive: Path, allow_unverified: bool = False) -> str:
    """Check ``archive`` is the pinned commit's by what there is to check; returns what was checked, in words
    ("" when there was nothing and ``allow_unverified`` let it through). Refuses any mismatch."""
    checked = []
    commit = tar_commit_id(archive)
    if commit is not None:
        if commit != src.commit:
            raise NpuboxError(
                f"source {src.name}: the archive {archive} was made from commit {commit} (git get-tar-commit-id), "
                f"not the pinned {src.commit}: it was not built; replace it with the archive of {src.commit}"
            )
        checked.append("its commit id (git get-tar-commit-id)")
    listed = listed_sha256(archive)
    if listed is not None:
        actual = sha256_file(archive)
        if actual != listed:
            raise NpuboxError(
                f"source {src.name}: the archive {archive} has sha256 {actual}, and {archive.parent / CHECKSUMS} "
                f"lists {listed}: it is corrupted or replaced; it was not built"
            )
        checked.append(f"its sha256 against {CHECKSUMS}")
    if checked:
        return " and ".join(checked)
    if allow_unverified:
        return ""
    raise NpuboxError(
        f"source {src.name}: the archive {archive} carries no commit id and no {CHECKSUMS} beside it lists it, "
        f"so nothing shows it is commit {src.commit}; make it with `git archive` from a clone, add its line to "
        f"{CHECKSUMS}, or build with --allow-unverified-sources (the image's labels then say so)"
    )


def export_source(
    src: Source,
    source_cache: Path | None,
    out_dir: Path,
    echo: Echo | None = _stderr_echo,
    allow_unverified: bool = False,
) -> tuple[Path, bool]:
    """Write `<out_dir>/<name>.tar` holding the tree at the pinned commit under `<name>/` (or a copy of its
    verified archive); returns it and whether it was verified."""
    located = locate(src, source_cache)
    out = out_dir / f"{src.name}.tar"
    if located.kind == "archive":
        checked = verify_archive(src, located.path, allow_unverified)
        if echo:
            echo(
                f"source {src.name}: {located.path.name} checked: {checked}"
                if checked
                else f"source {src.name}: {located.path.name} NOT verified (--allow-unverified-sources)"
            )
        shutil.copy2(located.path, out_dir / located.path.name)
        return out_dir / located.path.name, bool(checked)
    repo = located.path if located.kind == "repo" else fetch_mirror(src, echo=echo)
    check_commit_object(src, repo, located.where)
    proc = _git(["archive", "--format=tar", f"--prefix={src.name}/", "-o", str(out), src.commit], cwd=repo)
    if proc.returncode != 0:
        raise NpuboxError(f"source {src.name}: git archive of {src.commit} failed: {proc.stderr.strip()}")
    return out, True  # git archive of the commit object itself
