"""Acceptance 5: export → delete the image → import restores the same image id; a corrupted or
truncated archive is refused before anything is loaded.

The probe image is the CPU image plus one label of its own, so it has an id of its own that
`docker rmi` really deletes (the CPU image itself is left alone). Exporting it writes the whole
image (about 1.5 GB): it is done once here.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from llm.digest import sha256_file
from llm.env import transfer
from llm.env.engine import docker, image_exists, inspect_image
from llm.env.spec import load_spec
from llm.errors import NpuboxError

from .conftest import invoke

PROBE = "npubox/transfer-probe:1"


@pytest.fixture
def probe_image(cpu_image):
    dockerfile = f"FROM {cpu_image}\nLABEL npubox.transfer-probe={os.getpid()}\n"
    docker(["build", "--tag", PROBE, "-"], input=dockerfile, capture=True, what="building the transfer probe")
    yield PROBE
    subprocess.run(["docker", "rmi", "--force", PROBE], capture_output=True)


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_export_delete_import_restores_the_image(probe_image, tmp_path):
    image_id = inspect_image(probe_image)["Id"]
    loaded = load_spec("cpu")
    out = tmp_path / "export"
    proc = invoke("export-image", "--env", "cpu", "--image", probe_image, "--output", str(out), check=True)
    print(proc.stderr + proc.stdout)
    assert f"docker save --output {out}/." in proc.stderr  # echoed, into a temporary name
    spec_hash = inspect_image(probe_image)["Config"]["Labels"]["npubox.spec-hash"]
    archive = out / f"cpu-{loaded.spec.version}-{spec_hash[:12]}.tar"
    manifest = json.loads((out / f"cpu-{loaded.spec.version}-{spec_hash[:12]}.manifest.json").read_text())
    assert {p.name for p in out.iterdir()} == {archive.name, archive.name[:-4] + ".manifest.json"}  # no leftovers
    assert manifest == {
        "env": "cpu",
        "tag": probe_image,
        "image_id": image_id,
        "spec_hash": spec_hash,
        "archive": archive.name,
        "sha256": sha256_file(archive),
        "size": archive.stat().st_size,
    }

    subprocess.run(["docker", "rmi", probe_image], check=True, capture_output=True)
    assert not image_exists(probe_image) and not image_exists(image_id)

    flip_byte(archive, archive.stat().st_size // 2)
    bad = invoke("import-image", "--archive", str(archive))
    print(bad.stderr + bad.stdout)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith(f"error: the image archive {archive} is corrupted: its sha256 is ")
    assert "docker load" not in bad.stderr
    assert not image_exists(probe_image) and not image_exists(image_id)  # nothing loaded

    flip_byte(archive, archive.stat().st_size // 2)  # the copy is whole again
    good = invoke("import-image", "--archive", str(archive), check=True)
    print(good.stderr + good.stdout)
    assert f"docker load --input {archive}" in good.stderr
    assert f"loaded {probe_image} (image id {image_id})" in good.stdout
    assert inspect_image(probe_image)["Id"] == image_id


def write_fake_export(tmp_path, data: bytes = b"not really an image"):
    archive = tmp_path / "cpu-1.0.0-0123456789ab.tar"
    archive.write_bytes(data)
    manifest = transfer.Manifest(
        env="cpu",
        tag=PROBE,
        image_id="sha256:" + "0" * 64,
        spec_hash="0123456789ab" * 4,
        archive=archive.name,
        sha256=sha256_file(archive),
        size=len(data),
    )
    transfer.manifest_path(archive).write_text(manifest.model_dump_json())
    return archive


def test_truncated_archive_is_refused(tmp_path):
    archive = write_fake_export(tmp_path)
    with open(archive, "r+b") as f:
        f.truncate(5)
    with pytest.raises(NpuboxError, match=r"is 5 bytes, but its manifest says 19: it is incomplete"):
        transfer.import_image(archive)


def test_missing_or_broken_manifest_is_refused(tmp_path):
    archive = write_fake_export(tmp_path)
    transfer.manifest_path(archive).write_text('{"tag": 1}')
    with pytest.raises(NpuboxError, match=r"\.manifest\.json is not an npubox image manifest"):
        transfer.import_image(archive)
    transfer.manifest_path(archive).unlink()
    with pytest.raises(NpuboxError, match=r"no manifest cpu-1\.0\.0-0123456789ab\.manifest\.json beside"):
        transfer.import_image(archive)


@pytest.fixture
def tiny_image(tmp_path):
    """A one-file image with npubox's labels: exports in a moment."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "probe.txt").write_text(f"probe {os.getpid()}\n")
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY probe.txt /probe.txt\nLABEL npubox.env=cpu npubox.spec-hash=" + "ab" * 32 + "\n"
    )
    tag = "npubox/transfer-tiny-probe:1"
    docker(["build", "--tag", tag, str(context)], capture=True, what="building the tiny probe")
    yield tag
    subprocess.run(["docker", "rmi", "--force", tag], capture_output=True)


def test_archive_holding_another_image_than_the_manifest_says_is_refused(tiny_image, tmp_path):
    archive, manifest = transfer.export_image(load_spec("cpu"), tmp_path / "out", image=tiny_image)
    assert archive.name == f"cpu-{load_spec('cpu').spec.version}-abababababab.tar"
    assert manifest.image_id == inspect_image(tiny_image)["Id"]
    other = manifest.model_copy(update={"image_id": "sha256:" + "0" * 64})
    transfer.manifest_path(archive).write_text(other.model_dump_json())
    with pytest.raises(
        NpuboxError, match=f"holds image {manifest.image_id}, but its manifest says sha256:0000.*nothing was"
    ):
        transfer.import_image(archive)
