"""Air-gapped transfer: an image archive (`docker save`) plus a manifest that proves it arrived whole.

    <env>-<version>-<hash12>.tar              the image, as `docker save` writes it
    <env>-<version>-<hash12>.manifest.json    tag, image id, spec hash, sha256 and size of the .tar

Export writes the archive, then the manifest, each under a temporary name renamed into place: a
manifest exists only beside a complete archive. Import checks size and sha256 before `docker load`
(a corrupted or truncated copy loads nothing), then that the loaded image has the manifest's id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from llm.atomic import atomic_path, write_text_atomic
from llm.digest import sha256_file
from llm.env.engine import docker, image_exists, inspect_image
from llm.env.spec import VERSION_RE, LoadedSpec
from llm.errors import NpuboxError
from llm.yamlfile import NAME_RE

MANIFEST_SUFFIX = ".manifest.json"


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str
    tag: str
    image_id: str  # sha256:<64 hex>, the image's config digest: the same after save and load
    spec_hash: str
    archive: str  # the archive's file name, beside this manifest
    sha256: str
    size: int


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name.removesuffix(".tar") + MANIFEST_SUFFIX)


def archive_name(tag: str, env: str, version: str, spec_hash: str) -> str:
    """``<env>-<version>-<hash12>.tar`` from the image's labels, each checked first: a label is whatever the
    image's maker wrote, and a name such as ``../../x`` would put the archive outside ``--output``."""
    for label, value, ok in (
        ("npubox.env", env, NAME_RE.fullmatch(env)),
        ("org.opencontainers.image.version", version, VERSION_RE.fullmatch(version)),
        ("npubox.spec-hash", spec_hash, re.fullmatch(r"[0-9a-f]{64}", spec_hash)),
    ):
        if not ok:
            raise NpuboxError(
                f"the image {tag} has the label {label}={value!r}, which is not what npubox writes there "
                "(an env name, a version, a sha256); it was not built by npubox: nothing was written"
            )
    return f"{env}-{version}-{spec_hash[:12]}.tar"


def export_image(loaded: LoadedSpec, output: Path, image: str | None = None) -> tuple[Path, Manifest]:
    """`docker save` the env's image (or `image`) into `output`; returns the archive and its manifest."""
    tag = image or loaded.tag
    if not image_exists(tag):
        raise NpuboxError(
            f"the image {tag} for env {loaded.name!r} is not in the local Docker engine: "
            f"run `invoke build-image {loaded.env_args}` first"
        )
    info = inspect_image(tag)
    labels = info["Config"].get("Labels") or {}
    spec_hash = labels.get("npubox.spec-hash")
    if not spec_hash:
        raise NpuboxError(f"the image {tag} has no npubox.spec-hash label: it was not built by npubox from a spec")
    env = labels.get("npubox.env", loaded.name)
    version = labels.get("org.opencontainers.image.version", loaded.spec.version)
    archive = Path(output) / archive_name(tag, env, version, spec_hash)
    with atomic_path(archive) as tmp:
        docker(
            ["save", "--output", str(tmp), tag], what=f"saving {tag}", hint="check the free space in the output folder"
        )
    manifest = Manifest(
        env=env,
        tag=tag,
        image_id=info["Id"],
        spec_hash=spec_hash,
        archive=archive.name,
        sha256=sha256_file(archive),
        size=archive.stat().st_size,
    )
    write_text_atomic(manifest_path(archive), json.dumps(manifest.model_dump(), indent=2) + "\n")
    return archive, manifest


def read_manifest(archive: Path) -> Manifest:
    path = manifest_path(archive)
    if not path.is_file():
        raise NpuboxError(
            f"no manifest {path.name} beside {archive}: copy it along with the archive "
            f"(`invoke export-image` writes both)"
        )
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError) as e:
        first = str(e).splitlines()[0] if isinstance(e, json.JSONDecodeError) else e.errors()[0]["loc"]
        raise NpuboxError(f"{path} is not an npubox image manifest ({first}); export the image again") from None


def verify_archive(archive: Path, manifest: Manifest) -> None:
    """Refuse an archive whose size or sha256 differs from its manifest's."""
    if not archive.is_file():
        raise NpuboxError(f"the image archive {archive} does not exist")
    size = archive.stat().st_size
    if size != manifest.size:
        raise NpuboxError(
            f"the image archive {archive} is {size} bytes, but its manifest says {manifest.size}: "
            f"it is incomplete or not the exported file; copy it again"
        )
    digest = sha256_file(archive)
    if digest != manifest.sha256:
        raise NpuboxError(
            f"the image archive {archive} is corrupted: its sha256 is {digest}, but its manifest says "
            f"{manifest.sha256}; copy it again, nothing was loaded"
        )


def import_image(archive: Path) -> Manifest:
    """Verify the archive against its manifest, `docker load` it, and check the loaded image's id."""
    archive = Path(archive)
    manifest = read_manifest(archive)
    verify_archive(archive, manifest)
    docker(["load", "--input", str(archive)], what=f"loading {archive}")
    loaded_id = inspect_image(manifest.tag)["Id"] if image_exists(manifest.tag) else "absent"
    if loaded_id != manifest.image_id:
        raise NpuboxError(
            f"after loading {archive}, {manifest.tag} has image id {loaded_id}, but the manifest says "
            f"{manifest.image_id}; the archive does not hold the exported image"
        )
    return manifest
