"""Images and containers made by others: their labels are not trusted as paths (issue 19, case 8), and a
container npubox did not start is not removed by `invoke down` (case 9). Both need a running Docker engine;
each test builds or creates its own throwaway object and removes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not docker_ready(), reason="needs a running Docker engine")


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture
def labelled_image():
    """A one-layer image whose npubox.env label climbs out of any output folder."""
    tag = f"npubox-test/hostile-labels:{os.getpid()}"
    dockerfile = f"FROM scratch\nLABEL npubox.env=../../escaped npubox.spec-hash={'ab' * 32}\n"
    build = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    yield tag
    subprocess.run(["docker", "rmi", "--force", tag], capture_output=True)  # our own throwaway image


def test_export_refuses_an_image_label_that_would_leave_the_output_folder(labelled_image, tmp_path):
    out = tmp_path / "a" / "b" / "out"
    proc = invoke("export-image", "--image", labelled_image, "--output", str(out))
    assert proc.returncode != 0
    assert f"the image {labelled_image} has the label npubox.env='../../escaped'" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert "docker save" not in proc.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == []


def test_down_leaves_a_container_npubox_did_not_start(labelled_image):
    name = f"npubox-test-foreign-{os.getpid()}"
    create = subprocess.run(
        ["docker", "create", "--name", name, labelled_image, "true"], capture_output=True, text=True
    )
    assert create.returncode == 0, create.stderr
    try:
        proc = invoke("down", "--name", name)
        assert proc.returncode != 0
        assert f"the container {name} was not started by npubox (it has no npubox.managed=true label)" in proc.stderr
        still = subprocess.run(["docker", "inspect", "--type", "container", name], capture_output=True)
        assert still.returncode == 0  # not removed
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)  # the container this test made


def test_down_of_no_such_container_says_so():
    proc = invoke("down", "--name", f"npubox-test-absent-{os.getpid()}")
    assert proc.returncode == 0
    assert "no such container" in proc.stderr


# --- case 7: import-image ------------------------------------------------------------------------------


def build_one_layer(tmp_path: Path, tag: str, label: str) -> str:
    ctx = tmp_path / f"ctx-{label}"
    ctx.mkdir()
    (ctx / "f").write_text(label)
    (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY f /f\nLABEL npubox.spec-hash={'cd' * 32} probe={label}\n")
    build = subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return image_id(tag)


def image_id(tag: str) -> str:
    proc = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def retagged_archive(tmp_path: Path, source_tag: str, new_tag: str) -> Path:
    """`docker save` of ``source_tag`` with every tag in it rewritten to ``new_tag``, and a manifest that matches
    it byte for byte: what a hostile archive looks like to size and sha256 checks."""
    import hashlib
    import io
    import json
    import tarfile

    saved = tmp_path / "saved.tar"
    subprocess.run(["docker", "save", "--output", str(saved), source_tag], check=True, capture_output=True)
    repo, _, tag = new_tag.rpartition(":")
    archive = tmp_path / "hostile.tar"
    with tarfile.open(saved) as src, tarfile.open(archive, "w") as out:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "manifest.json":
                entries = json.loads(data)
                entries[0]["RepoTags"] = [new_tag]
                data = json.dumps(entries).encode()
            elif member.name == "repositories":
                data = json.dumps({repo: {tag: next(iter(next(iter(json.loads(data).values())).values()))}}).encode()
            if data is not None:
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    manifest = dict(
        env="cpu",
        tag=new_tag,
        image_id=image_id(source_tag),
        spec_hash="cd" * 32,
        archive=archive.name,
        sha256=digest,
        size=archive.stat().st_size,
    )
    (tmp_path / "hostile.manifest.json").write_text(json.dumps(manifest))
    return archive


def test_import_never_repoints_an_existing_tag(tmp_path):
    victim = f"npubox-test/users-own:{os.getpid()}"
    hostile = f"npubox-test/hostile-import:{os.getpid()}"
    try:
        victim_id = build_one_layer(tmp_path, victim, "users")
        build_one_layer(tmp_path, hostile, "hostile")
        archive = retagged_archive(tmp_path, hostile, victim)
        subprocess.run(["docker", "rmi", hostile], check=True, capture_output=True)
        proc = invoke("import-image", "--archive", str(archive))
        assert proc.returncode != 0
        assert f"would repoint the tag {victim} from image {victim_id} to " in proc.stderr
        assert "docker load" not in proc.stderr
        assert image_id(victim) == victim_id  # still the user's image
    finally:
        subprocess.run(["docker", "rmi", "--force", victim, hostile], capture_output=True)  # this test's images


def test_import_refuses_an_archive_whose_tags_are_not_its_manifests(tmp_path):
    import json

    hostile = f"npubox-test/hostile-import:{os.getpid()}"
    try:
        build_one_layer(tmp_path, hostile, "hostile")
        archive = retagged_archive(tmp_path, hostile, f"npubox-test/elsewhere:{os.getpid()}")
        manifest = tmp_path / "hostile.manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "tag": hostile}))
        proc = invoke("import-image", "--archive", str(archive))
        assert proc.returncode != 0
        assert f"would tag ['npubox-test/elsewhere:{os.getpid()}'], but its manifest names '{hostile}'" in proc.stderr
        assert "docker load" not in proc.stderr
    finally:
        elsewhere = f"npubox-test/elsewhere:{os.getpid()}"  # loaded only if the refusal regressed
        subprocess.run(["docker", "rmi", "--force", hostile, elsewhere], capture_output=True)


def test_a_failed_build_step_leaves_no_container(tmp_path):
    from llm.env.context import BuildContext
    from llm.env.image import _build_args

    step = f"/no/such/program-{os.getpid()}"
    (tmp_path / "f").write_text("x")
    (tmp_path / "Dockerfile").write_text(f"FROM scratch\nCOPY f /f\nRUN {step}\n")
    tag = f"npubox-test/failing-build:{os.getpid()}"
    proc = subprocess.run(
        ["docker", *_build_args(BuildContext(tmp_path, {}), tag), str(tmp_path)], capture_output=True, text=True
    )
    listing = subprocess.run(
        ["docker", "ps", "--all", "--no-trunc", "--format", "{{.ID}} {{.Command}}"], capture_output=True, text=True
    ).stdout
    left = [line.split()[0] for line in listing.splitlines() if step in line]  # only this build's step
    subprocess.run(["docker", "rm", "--force", *left], capture_output=True)
    assert proc.returncode != 0
    assert left == []
