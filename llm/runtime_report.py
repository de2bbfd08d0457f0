"""`python -m llm env`: the running environment prints itself; `--verify` checks it against the
spec baked into the image (/etc/npubox/spec.json) and names every drift."""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

BAKED_SPEC = Path(os.environ.get("NPUBOX_BAKED_SPEC", "/etc/npubox/spec.json"))
SOURCES_ROOT = Path(os.environ.get("NPUBOX_SOURCES", "/opt/npubox/sources"))  # where images unpack pinned sources
KEY_PACKAGES = (
    "torch",
    "megatron-core",
    "transformers",
    "tokenizers",
    "safetensors",
    "pyarrow",
    "torch-npu",
    "apex",
    "mindspore",
)


def installed_packages() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def read_version_info(path: Path) -> str | None:
    """The `Version=` (or `version=`) value of an Ascend version.info / *_install.info file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "version" and value.strip():
            return value.strip()
    return None


def cann_version() -> str | None:
    """The toolkit's version, from the same files containers/install-cann.sh checks at build time."""
    homes = [os.environ.get("ASCEND_TOOLKIT_HOME") or "", "/usr/local/Ascend/ascend-toolkit/latest"]
    for home in filter(None, homes):
        for path in [
            Path(home) / "version.info",
            *map(Path, sorted(glob.glob(f"{home}/*-linux/ascend_toolkit_install.info"))),
        ]:
            version = read_version_info(path)
            if version:
                return version
    return None


def source_commits() -> dict[str, str]:
    """Commits of pinned source checkouts, recorded at build time in /opt/npubox/sources/*.commit."""
    out = {}
    for path in sorted(SOURCES_ROOT.glob("*.commit")):
        out[path.stem] = path.read_text().strip()
    return out


def devices() -> dict[str, object]:
    found: dict[str, object] = {"davinci": sorted(glob.glob("/dev/davinci[0-9]*"))}
    found["nvidia"] = sorted(glob.glob("/dev/nvidia[0-9]*"))
    visible = {k: os.environ[k] for k in ("ASCEND_RT_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    if visible:
        found["visible"] = visible
    return found


def realized() -> dict:
    pkgs = installed_packages()
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "user": f"{os.getuid()}:{os.getgid()}",
        "packages": {name: pkgs.get(name) for name in KEY_PACKAGES if pkgs.get(name)},
        "cann": cann_version(),
        "sources": source_commits(),
        "devices": devices(),
        "all_packages": pkgs,
    }


def load_baked() -> dict | None:
    if not BAKED_SPEC.is_file():
        return None
    return json.loads(BAKED_SPEC.read_text())


def baked_engine() -> str:
    """The training engine the image's baked spec names (``mcore`` when there is no spec or it names none)."""
    baked = load_baked()
    return ((baked or {}).get("spec") or {}).get("engine") or "mcore"


def drifts(baked: dict, found: dict, environ: dict[str, str] | None = None) -> list[str]:
    """Every way the running environment differs from the baked spec, one sentence each."""
    out = []
    spec = baked["spec"]
    environ = os.environ if environ is None else environ
    for key, value in sorted(spec.get("env", {}).items()):  # compared literally: no $VAR expansion either side
        if environ.get(key) != value:
            out.append(
                f"env {key}: pinned {value!r}, found {environ[key]!r}"
                if key in environ
                else f"env {key}: pinned {value!r}, found unset"
            )
    if not found["python"].startswith(spec["python"] + "."):
        out.append(f"python: pinned {spec['python']}, found {found['python']}")
    installed = found["all_packages"]
    for name, pinned in sorted(baked["pins"].items()):
        have = installed.get(name)
        if have is None:
            out.append(f"{name}: pinned {pinned}, found not installed")
        elif have != pinned:
            out.append(f"{name}: pinned {pinned}, found {have}")
    if spec.get("cann") and found["cann"] != spec["cann"]["version"]:
        out.append(f"CANN: pinned {spec['cann']['version']}, found {found['cann'] or 'not installed'}")
    for src in spec.get("sources", []):
        have = found["sources"].get(src["name"])
        if have != src["commit"]:
            out.append(f"source {src['name']}: pinned {src['commit']}, found {have or 'not present'}")
    return out


def print_table(info: dict, baked: dict | None) -> None:
    from llm.tables import print_table

    pins = baked["pins"] if baked else {}
    rows = [
        ("python", info["python"], baked["spec"]["python"] if baked else ""),
        ("platform", info["platform"], ""),
        ("user", info["user"], ""),
    ]
    rows += [(name, version, pins.get(name, "")) for name, version in info["packages"].items()]
    if info["cann"] or (baked and baked["spec"].get("cann")):
        rows.append(
            ("CANN", info["cann"] or "-", (baked["spec"].get("cann") or {}).get("version", "") if baked else "")
        )
    rows += [(f"source {name}", commit, "") for name, commit in info["sources"].items()]
    dev = info["devices"]
    rows.append(("devices", ", ".join(dev["davinci"] + dev["nvidia"]) or "none (CPU)", ""))
    title = f"npubox environment{' ' + baked['tag'] if baked else ''}"
    print_table(["component", "found", "pinned"], rows, title=title)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm env", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--verify", action="store_true", help="compare with the spec baked into the image; exit 1 naming each drift"
    )
    parser.add_argument("--all-packages", action="store_true", help="with --json: include every installed package")
    args = parser.parse_args(argv)

    info = realized()
    baked = load_baked()
    if args.verify:
        if baked is None:
            print(f"error: no baked spec at {BAKED_SPEC}: this is not an npubox image", file=sys.stderr)
            return 2
        from llm.mindformers.check import stack_drifts

        problems = drifts(baked, info) + stack_drifts(baked, info["all_packages"], SOURCES_ROOT)
        for p in problems:
            print(f"drift: {p}", file=sys.stderr)
        if problems:
            print(f"{len(problems)} drift(s) from {baked['tag']}", file=sys.stderr)
            return 1
        print(f"ok: matches {baked['tag']} ({len(baked['pins'])} pins)")
        return 0
    if args.json:
        if not args.all_packages:
            info = {k: v for k, v in info.items() if k != "all_packages"}
        info["image"] = baked["tag"] if baked else None
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print_table(info, baked)
    return 0
