"""The host side installs light: importing it never pulls in torch, megatron or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST_MODULES = ["llm", "llm.env", "llm.env.spec", "llm.env.image", "llm.env.container", "llm.env.commands",
                "llm.recipes", "llm.envinfo", "llm.yamlfile", "llm.env.base"]  # fmt: skip
HEAVY = ["torch", "megatron", "transformers"]

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def test_host_imports_stay_light():
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *HOST_MODULES], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_probe_would_notice_a_heavy_import():
    # The same probe, made to import one heavy module on purpose, reports it: the check can fail.
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), "llm", "transformers"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "transformers" in json.loads(proc.stdout)
