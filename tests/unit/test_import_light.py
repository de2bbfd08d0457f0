"""The host side installs light: importing it never pulls in torch, megatron or transformers.

The host side is what `import llm.env` and tasks.py reach (every module of llm.env, the spec, recipe and
workspace rules they read, the phase table of `python -m llm`, the manifests, the MindSpeed-LLM engine's argv),
plus what runs inside a container before torch may be imported (`python -m llm env`). The test imports every one
in a fresh interpreter and fails on a heavy import, and on a module the host side reaches that is not listed here.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST_MODULES = [
    "llm",
    "llm.__main__",
    "llm.atomic",
    "llm.commit_table",
    "llm.compat",
    "llm.digest",
    "llm.errors",
    "llm.regular_file",
    "llm.manifest",
    "llm.manifest.job",
    "llm.manifest.kubernetes",
    "llm.manifest.slurm",
    "llm.pretrain",
    "llm.pretrain.mindspeed_llm",
    "llm.pretrain.mindspeed_llm.scripts",
    "llm.pretrain.mcore",
    "llm.recipes",
    "llm.recipes.cli",
    "llm.recipes.hfconfig",
    "llm.runtime_report",
    "llm.torchrun",
    "llm.workspace",
    "llm.yamlfile",
    "tasks",
    *sorted(f"llm.env.{m.name}" for m in pkgutil.iter_modules([str(REPO / "llm" / "env")])),
    "llm.env",
]
HEAVY = ["torch", "megatron", "transformers"]

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({{"heavy": sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}),
                  "reached": sorted(m for m in sys.modules if m == "tasks" or m.split(".")[0] == "llm")}}))
"""


def probe(*modules: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *modules],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_host_imports_stay_light():
    result = probe(*HOST_MODULES)
    assert result["heavy"] == []
    assert set(result["reached"]) <= set(HOST_MODULES), "reached by the host side but not listed in HOST_MODULES"


def test_every_env_module_is_covered():
    assert {"llm.env.spec", "llm.env.image", "llm.env.plan", "llm.env.engine", "llm.env.container"} <= set(HOST_MODULES)


def test_probe_would_notice_a_heavy_import():
    # The same probe, made to import one heavy module on purpose, reports it: the check can fail.
    assert "transformers" in probe("llm", "transformers")["heavy"]
