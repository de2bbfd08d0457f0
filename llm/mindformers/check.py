"""What `llm env --verify` adds on a MindFormers image: MindSpore's own installation check (``mindspore.run_check()``
on the image's device: CPU in a twin, Ascend on an NPU) and MindFormers' own version map
(``mindformers/VERSION_MAP.json`` in the pinned source, @ v1.3.2 and @ r1.8.0: the MindSpore releases each
MindFormers release supports)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from llm.mindformers.guides import SOURCE_NAME

RUN_CHECK = "import mindspore, sys; mindspore.set_device(sys.argv[1]); mindspore.run_check()"
PASSED = re.compile(r"MindSpore has been installed on platform \[(\w+)\] successfully")


def version_map_drift(source_dir, mindspore: str | None) -> list[str]:
    init = (source_dir / "mindformers" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    version_map = source_dir / "mindformers" / "VERSION_MAP.json"
    if found is None or not version_map.is_file():
        return [f"MindFormers at {source_dir}: no __version__ or VERSION_MAP.json to check MindSpore against"]
    release = found.group(1)
    entry = json.loads(version_map.read_text(encoding="utf-8")).get("mf", {}).get(release)
    if entry is None:
        return [f"MindFormers {release}: its own VERSION_MAP.json has no entry for it"]
    if mindspore not in entry.get("support", []):
        return [
            f"MindSpore {mindspore or 'not installed'}: MindFormers {release}'s VERSION_MAP.json supports "
            f"{', '.join(entry.get('support', []))} (prefers {entry.get('prefer')})"
        ]
    return []


def run_check_drift(device: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CHECK, device], capture_output=True, text=True, timeout=600, cwd="/tmp"
    )
    out = proc.stdout + proc.stderr
    m = PASSED.search(out)
    if proc.returncode != 0 or m is None or m.group(1) != device:
        last = [line for line in out.splitlines() if line.strip()][-1:] or ["no output"]
        return [f"mindspore.run_check() on {device} failed (exit {proc.returncode}): {last[0]}"]
    print(f"ok: mindspore.run_check() on {device}: {m.group(0)}")
    return []


def stack_drifts(baked: dict, installed: dict[str, str], sources_root) -> list[str]:
    """Drifts of a MindFormers image's own checks (none for other images); ``sources_root``: where the image's
    pinned sources are."""
    spec = baked["spec"]
    if spec.get("engine") != "mindformers":
        return []
    source_dir = sources_root / SOURCE_NAME
    device = "CPU" if spec.get("accelerator") == "cpu" else "Ascend"
    return version_map_drift(source_dir, installed.get("mindspore")) + run_check_drift(device)
