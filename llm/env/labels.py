"""What an image says about itself: its OCI and npubox.* labels, and the spec baked into it at
/etc/npubox/spec.json (read by `python -m llm env --verify` and the engines). No site settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import llm
from llm.env.spec import LoadedSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def labels(loaded: LoadedSpec, base_ref: str) -> dict[str, str]:
    """OCI labels plus npubox.* labels: every pin, every source commit, the spec hash, a twin's differences."""
    from llm.env.twin import differences

    spec = loaded.spec
    locked = loaded.lock_path.is_file()
    out = {
        "org.opencontainers.image.title": f"npubox/{spec.name}",
        "org.opencontainers.image.description": spec.description,
        "org.opencontainers.image.version": spec.version,
        "org.opencontainers.image.revision": git_revision(),
        "org.opencontainers.image.base.name": base_ref,
        "org.opencontainers.image.vendor": "npubox",
        "npubox.env": spec.name,
        "npubox.arch": loaded.arch,
        "npubox.spec-hash": loaded.content_hash if locked else "(computed once the lock exists)",
        "npubox.llm-version": llm.__version__,
        "npubox.accelerator": spec.accelerator,
        "npubox.engine": spec.engine,
        "npubox.python": spec.python,
    }
    if spec.cann:
        out["npubox.cann"] = spec.cann.version
    if loaded.twin_of is not None:
        out["npubox.twin-of"] = loaded.twin_of.name
        out["npubox.twin.differences"] = "; ".join(differences(loaded))
    for src in spec.sources:
        out[f"npubox.source.{src.name}"] = src.commit
    for name, version in loaded.known_pins().items():
        out[f"npubox.pin.{name}"] = version
    return out


def baked_spec(loaded: LoadedSpec) -> dict:
    """What the image carries at /etc/npubox/spec.json."""
    from llm.env.twin import differences

    out = {
        "env": loaded.name,
        "arch": loaded.arch,
        "tag": loaded.tag,
        "spec_hash": loaded.content_hash,
        "spec": loaded.spec.model_dump(mode="json"),
        "pins": loaded.pins(),
    }
    if loaded.twin_of is not None:
        out["twin_of"] = {
            "env": loaded.twin_of.name,
            "spec": loaded.twin_of.spec.model_dump(mode="json"),
            "differences": differences(loaded),
        }
    return out
