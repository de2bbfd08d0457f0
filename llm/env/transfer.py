"""Air-gapped transfer: an image archive (`docker save`) plus a manifest that proves it arrived whole.

    <env>-<version>-<hash12>.tar              the image, as `docker save` writes it
    <env>-<version>-<hash12>.manifest.json    tag, image id, spec hash, sha256 and size of the .tar

Export writes the archive, then the manifest, each under a temporary name renamed into place: a
manifest exists only beside a complete archive. Import checks size and sha256 before `docker load`
(a corrupted or truncated copy loads nothing), then that the loaded image has the manifest's id.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
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


MAX_JSON_MEMBER = 4 << 20  # manifest.json, repositories, an image config: a few KiB each


def _json_member(tar: tarfile.TarFile, name: str, archive: Path):
    member = tar.getmember(name) if name in tar.getnames() else None
    if member is None or not member.isfile() or member.size > MAX_JSON_MEMBER:
        raise NpuboxError(f"the image archive {archive} has no {name} as `docker save` writes it; nothing was loaded")
    raw = tar.extractfile(member).read()
    try:
        return raw, json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise NpuboxError(f"the image archive {archive}: its {name} is not JSON; nothing was loaded") from None


# Magic numbers of the compressions `docker load` accepts for a layer; `docker save` writes every layer as a plain tar.
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def _check_layer(tar: tarfile.TarFile, name: str, archive: Path) -> None:
    member = tar.getmember(name) if name in tar.getnames() else None
    if member is None or not (member.isfile() or member.issym() or member.islnk()):
        raise NpuboxError(f"the image archive {archive} names a layer {name} it does not hold; nothing was loaded")
    head = tar.extractfile(member).read(8)
    kind = next((kind for magic, kind in COMPRESSED.items() if head.startswith(magic)), None)
    if kind:
        raise NpuboxError(
            f"the image archive {archive}: its layer {name} is {kind}-compressed, which `docker save` never writes "
            "and `docker load` would expand without a limit; nothing was loaded"
        )


def check_contents(archive: Path, manifest: Manifest) -> None:
    """What `docker load` would do, read from the archive before it does it: one image, the manifest's, an
    npubox image (its config carries the manifest's spec hash), tagged with the manifest's tag and no other, its
    layers uncompressed; and that tag, if it exists here, already names that image (a load never repoints someone's
    tag)."""
    if manifest.archive != archive.name:
        raise NpuboxError(
            f"the manifest {manifest_path(archive)} is for {manifest.archive}, not {archive.name}; "
            "keep the names export-image wrote, nothing was loaded"
        )
    try:
        tar = tarfile.open(archive, "r:")  # plain tar only: export-image writes no compression (no gzip bomb)
    except tarfile.TarError:
        raise NpuboxError(
            f"the image archive {archive} is not an uncompressed tar as `invoke export-image` writes; "
            "nothing was loaded"
        ) from None
    with tar:
        _, entries = _json_member(tar, "manifest.json", archive)
        if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
            raise NpuboxError(f"the image archive {archive} holds {len(entries)} images, not one; nothing was loaded")
        tags = entries[0].get("RepoTags") or []
        if tags != [manifest.tag]:
            raise NpuboxError(
                f"the image archive {archive} would tag {tags}, but its manifest names {manifest.tag!r} alone; "
                "nothing was loaded"
            )
        config_raw, config = _json_member(tar, str(entries[0].get("Config", "")), archive)
        for layer in entries[0].get("Layers") or []:
            _check_layer(tar, str(layer), archive)
        if "repositories" in tar.getnames():
            _, repositories = _json_member(tar, "repositories", archive)
            legacy = [f"{repo}:{tag}" for repo, by_tag in repositories.items() for tag in by_tag]
            if legacy != [manifest.tag]:
                raise NpuboxError(f"the image archive {archive} would tag {legacy} (repositories); nothing was loaded")
    config_id = "sha256:" + hashlib.sha256(config_raw).hexdigest()
    if config_id != manifest.image_id:
        raise NpuboxError(
            f"the image archive {archive} holds image {config_id}, but its manifest says {manifest.image_id}; "
            "nothing was loaded"
        )
    labels = (config.get("config") or {}).get("Labels") or {}
    if labels.get("npubox.spec-hash") != manifest.spec_hash:
        raise NpuboxError(
            f"the image in {archive} is not the npubox image its manifest describes (its npubox.spec-hash label is "
            f"{labels.get('npubox.spec-hash')!r}, the manifest says {manifest.spec_hash!r}); nothing was loaded"
        )
    if image_exists(manifest.tag):
        current = inspect_image(manifest.tag)["Id"]
        if current != manifest.image_id:
            raise NpuboxError(
                f"loading {archive} would repoint the tag {manifest.tag} from image {current} to "
                f"{manifest.image_id}: refused, nothing was loaded; if that tag is yours to replace, "
                f"`docker rmi {manifest.tag}` first"
            )


def import_image(archive: Path) -> Manifest:
    """Verify the archive against its manifest and what it holds, `docker load` it, and check the loaded
    image's id."""
    archive = Path(archive)
    manifest = read_manifest(archive)
    verify_archive(archive, manifest)
    check_contents(archive, manifest)
    docker(["load", "--input", str(archive)], what=f"loading {archive}")
    loaded_id = inspect_image(manifest.tag)["Id"] if image_exists(manifest.tag) else "absent"
    if loaded_id != manifest.image_id:
        raise NpuboxError(
            f"after loading {archive}, {manifest.tag} has image id {loaded_id}, but the manifest says "
            f"{manifest.image_id}; the archive does not hold the exported image"
        )
    return manifest
