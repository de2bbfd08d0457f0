"""The base image: pulled when a registry is reachable, else bootstrapped from Debian packages
with debootstrap and `docker import` (air-gapped sites and CI need no registry)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from llm.env.engine import Echo, _stderr_echo, docker, image_exists
from llm.env.spec import Bootstrap, LoadedSpec
from llm.errors import NpuboxError

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def bootstrap_tag(boot: Bootstrap) -> str:
    key = json.dumps(boot.model_dump(mode="json"), sort_keys=True).encode()
    return f"npubox/base-debian:{boot.suite}-{hashlib.sha256(key).hexdigest()[:12]}"


def resolve_base(loaded: LoadedSpec, *, pull: bool = True, echo: Echo | None = _stderr_echo) -> str:
    """The image reference to build FROM: present locally, pulled, or a bootstrapped base."""
    base = loaded.spec.base
    ref = f"{base.image}@{base.digest}" if base.digest else base.image
    if image_exists(ref):
        return ref
    if base.bootstrap and image_exists(bootstrap_tag(base.bootstrap)):
        return bootstrap_tag(base.bootstrap)
    if pull:
        proc = docker(["pull", ref], echo=echo, check=False, capture=True)
        if proc.returncode == 0:
            return ref
    how = (
        f"run `invoke base-image {loaded.env_args}` to bootstrap it from Debian packages"
        if base.bootstrap
        else ("load it with `docker load` or make the registry reachable")
    )
    raise NpuboxError(f"the base image {ref} is not present and could not be pulled; {how}.")


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (read at run time, never written down)."""
    override = os.environ.get("NPUBOX_DEBIAN_MIRROR")
    if override:
        return override
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uris, suites = [], []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                uris = line.split(":", 1)[1].split()
            elif line.startswith("Suites:"):
                suites = line.split(":", 1)[1].split()
            elif not line.strip() and uris:
                if any(not s.endswith(("-security", "-updates", "-backports")) for s in suites):
                    candidates += uris
                uris, suites = [], []
        if uris and any(not s.endswith(("-security", "-updates", "-backports")) for s in suites):
            candidates += uris
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.is_file():
        for line in sources_list.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[2]:
                candidates.append(parts[2] if not parts[1].startswith("[") else parts[3])
    debian = [u for u in candidates if "debian" in u]
    if not (debian or candidates):
        raise NpuboxError("no Debian mirror found in this host's apt sources; set NPUBOX_DEBIAN_MIRROR to one")
    return (debian or candidates)[0]


def bootstrap_base(loaded: LoadedSpec, echo: Echo | None = _stderr_echo) -> str:
    """debootstrap the spec's suite into a temporary root and `docker import` it."""
    boot = loaded.spec.base.bootstrap
    if boot is None:
        raise NpuboxError(f"{loaded.path}: field `base.bootstrap` is missing, so the base can only be pulled")
    if shutil.which("debootstrap") is None:
        raise NpuboxError(
            "debootstrap is not installed: install it (on Debian: `apt-get install debootstrap`) and retry."
        )
    if os.geteuid() != 0:
        raise NpuboxError(
            "bootstrapping a base image runs debootstrap, which needs root: run `invoke base-image` as root."
        )
    tag = bootstrap_tag(boot)
    with tempfile.TemporaryDirectory(prefix="npubox-base-") as tmp:
        root = Path(tmp) / "root"
        cmd = ["debootstrap", f"--variant={boot.variant}", f"--include={','.join(boot.packages)}"]
        if Path(DEBIAN_KEYRING).is_file():
            cmd.append(f"--keyring={DEBIAN_KEYRING}")
        cmd += [boot.suite, str(root), debian_mirror()]
        if echo:
            echo(" ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise NpuboxError(f"debootstrap of {boot.suite} failed (exit {proc.returncode}): {' / '.join(tail)}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            if echo:
                echo(f"tar -C <root> -c . | docker import - {tag}")
            proc = subprocess.run(
                [
                    "docker",
                    "import",
                    "--change",
                    'CMD ["/bin/bash"]',
                    "--change",
                    f"LABEL npubox.base.suite={boot.suite} npubox.base.packages={','.join(boot.packages)}",
                    "-",
                    tag,
                ],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
            )
        finally:
            tar.stdout.close()
            tar.wait()
        if proc.returncode != 0 or tar.returncode != 0:
            raise NpuboxError(f"docker import of the bootstrapped {boot.suite} root failed: {proc.stderr.strip()}")
    return tag


def ensure_base(loaded: LoadedSpec, *, force_bootstrap: bool = False, echo: Echo | None = _stderr_echo) -> str:
    """`invoke base-image`: use what is there, else pull, else bootstrap."""
    if not force_bootstrap:
        try:
            return resolve_base(loaded, echo=echo)
        except NpuboxError:
            if loaded.spec.base.bootstrap is None:
                raise
    return bootstrap_base(loaded, echo=echo)
