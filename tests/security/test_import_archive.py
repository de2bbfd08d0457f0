"""`invoke import-image` reads what it is handed before `docker load` does (issue 19: a gzip bomb expanded without a
limit; the import manifest's `archive` field was ignored). The archives here are made in Python as `docker save`
lays them out; Docker is never reached: a test fails if anything calls it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time

import pytest

from llm.digest import sha256_file
from llm.env import transfer
from llm.errors import NpuboxError

TAG = "npubox/cpu:1.0.0-0123456789ab"
SPEC_HASH = "ab" * 32
BOMB = 64 << 20  # zeros that gzip packs into some 64 KiB


@pytest.fixture(autouse=True)
def no_docker(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"Docker was asked: {args}")

    for name in ("docker", "image_exists", "inspect_image"):
        monkeypatch.setattr(transfer, name, refuse)


def gzipped_zeros(size: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as z:
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            z.write(chunk)
    return out.getvalue()


def saved_image(layer: bytes) -> bytes:
    """A `docker save` archive of one image with one layer, npubox's labels and TAG."""
    config = json.dumps({"config": {"Labels": {"npubox.spec-hash": SPEC_HASH}}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [TAG], "Layers": ["0a1b/layer.tar"]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (("manifest.json", manifest), (config_name, config), ("0a1b/layer.tar", layer)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def exported(tmp_path, data: bytes, config_id: str | None = None, archive_field: str | None = None):
    """``data`` as an export-image archive with a manifest that matches it (size, sha256, image id)."""
    archive = tmp_path / "cpu-1.0.0-0123456789ab.tar"
    archive.write_bytes(data)
    manifest = transfer.Manifest(
        env="cpu",
        tag=TAG,
        image_id=config_id or "sha256:" + "0" * 64,
        spec_hash=SPEC_HASH,
        archive=archive_field or archive.name,
        sha256=sha256_file(archive),
        size=len(data),
    )
    transfer.manifest_path(archive).write_text(manifest.model_dump_json())
    return archive


def test_a_gzip_bomb_as_the_archive_is_refused_unread(tmp_path):
    archive = exported(tmp_path, gzipped_zeros(BOMB))
    started = time.monotonic()
    with pytest.raises(NpuboxError) as refused:
        transfer.import_image(archive)
    assert str(refused.value) == (
        f"the image archive {archive} is not an uncompressed tar as `invoke export-image` writes; nothing was loaded"
    )
    assert time.monotonic() - started < 5


def test_a_gzip_bomb_as_a_layer_is_refused_before_docker_load(tmp_path):
    """`docker save` writes its layers uncompressed; `docker load` would expand a compressed one without a limit."""
    archive = exported(tmp_path, saved_image(gzipped_zeros(BOMB)))
    with tarfile.open(archive) as tar:
        config = next(m for m in tar.getnames() if m.endswith(".json") and m != "manifest.json")
        config_id = "sha256:" + hashlib.sha256(tar.extractfile(config).read()).hexdigest()
    archive = exported(tmp_path, archive.read_bytes(), config_id=config_id)
    with pytest.raises(NpuboxError) as refused:
        transfer.import_image(archive)
    assert str(refused.value) == (
        f"the image archive {archive}: its layer 0a1b/layer.tar is gzip-compressed, which `docker save` never writes "
        "and `docker load` would expand without a limit; nothing was loaded"
    )


def test_the_manifests_archive_field_must_name_the_archive(tmp_path):
    archive = exported(tmp_path, saved_image(b"\0" * 1024), archive_field="cpu-1.0.0-ffffffffffff.tar")
    with pytest.raises(NpuboxError) as refused:
        transfer.import_image(archive)
    assert str(refused.value) == (
        f"the manifest {transfer.manifest_path(archive)} is for cpu-1.0.0-ffffffffffff.tar, not {archive.name}; "
        "keep the names export-image wrote, nothing was loaded"
    )
