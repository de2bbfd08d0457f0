"""A source archive is built as the pinned commit only when it shows it is (issue 19, case 1): the commit id
`git archive` writes into it, or a SHA256SUMS line beside it. Archives made here with real git."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest

from llm.env.sources import export_source
from llm.env.spec import Source
from llm.errors import NpuboxError
from tests.conftest import SOURCES as SHARED


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@localhost", "PATH": "/usr/bin:/bin", "HOME": str(repo)}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def two_commits(tmp_path) -> tuple[Path, str, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "pinned.py").write_text("PINNED = True\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "pinned")
    pinned = git(repo, "rev-parse", "HEAD")
    (repo / "other.py").write_text("import os\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "other")
    return repo, pinned, git(repo, "rev-parse", "HEAD")


def source(commit: str) -> Source:
    return Source(name="Foo", url="https://example.invalid/foo.git", commit=commit, install="pythonpath")


def archive_of(repo: Path, commit: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    git(repo, "archive", "--format=tar.gz", "--prefix=Foo/", "-o", str(path), commit)
    return path


def test_an_archive_of_another_commit_under_the_pinned_name_is_refused(two_commits, tmp_path):
    repo, pinned, other = two_commits
    archive_of(repo, other, tmp_path / "cache" / f"Foo-{pinned}.tar.gz")
    (tmp_path / "out").mkdir()
    with pytest.raises(NpuboxError) as e:
        export_source(source(pinned), tmp_path / "cache", tmp_path / "out", echo=None)
    assert f"was made from commit {other} (git get-tar-commit-id), not the pinned {pinned}" in str(e.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_archive_without_a_commit_id_or_checksum_needs_the_flag(two_commits, tmp_path):
    _, pinned, _ = two_commits
    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "Foo").mkdir()
    (tmp_path / "Foo" / "anything.py").write_text("print('not the pinned tree')\n")
    with tarfile.open(cache / f"Foo-{pinned}.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "Foo", arcname="Foo")
    (tmp_path / "out").mkdir()
    with pytest.raises(NpuboxError, match="carries no commit id and no SHA256SUMS beside it lists it"):
        export_source(source(pinned), cache, tmp_path / "out", echo=None)
    lines = []
    archive, verified = export_source(source(pinned), cache, tmp_path / "out", echo=lines.append, allow_unverified=True)
    assert verified is False and archive.is_file()
    assert lines == [f"source Foo: Foo-{pinned}.tar.gz NOT verified (--allow-unverified-sources)"]


def test_a_checksum_beside_the_archive_is_checked(two_commits, tmp_path):
    repo, pinned, _ = two_commits
    archive = archive_of(repo, pinned, tmp_path / "cache" / f"Foo-{pinned}.tar.gz")
    sums = tmp_path / "cache" / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  {archive.name}\n")
    (tmp_path / "out").mkdir()
    with pytest.raises(NpuboxError, match=r"has sha256 [0-9a-f]{64}, and .*SHA256SUMS lists 0{64}"):
        export_source(source(pinned), tmp_path / "cache", tmp_path / "out", echo=None)
    sums.write_text(f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.name}\n")
    lines = []
    _, verified = export_source(source(pinned), tmp_path / "cache", tmp_path / "out", echo=lines.append)
    assert verified is True
    assert lines == [
        f"source Foo: {archive.name} checked: its commit id (git get-tar-commit-id) and its sha256 against SHA256SUMS"
    ]


@pytest.mark.skipif(not (SHARED / "SHA256SUMS").is_file(), reason=f"no pinned source archives in {SHARED}")
def test_the_shared_pinned_archives_pass_both_checks(tmp_path):
    from llm.env.sources import verify_archive

    for archive in sorted(SHARED.glob("*.tar.gz")):
        name, commit = archive.name.removesuffix(".tar.gz").rsplit("-", 1)
        src = Source(name=name, url="https://example.invalid/x.git", commit=commit, install="pythonpath")
        assert verify_archive(src, archive) == "its commit id (git get-tar-commit-id) and its sha256 against SHA256SUMS"
