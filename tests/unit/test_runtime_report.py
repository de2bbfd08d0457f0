"""`python -m llm env`: drifts from the baked spec are named; the command runs on the host too."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from llm.env.labels import baked_spec
from llm.env.spec import load_spec
from llm.runtime_report import drifts

REPO = Path(__file__).resolve().parents[2]
MEGATRON_COMMIT = "baf94af3c667248865f23df73b9fb8e2395e6fd0"


def baked(**spec) -> dict:
    return {
        "tag": "npubox/test:1.0.0-0123456789ab",
        "spec": {"python": "3.11", "sources": [], "cann": None, **spec},
        "pins": {"torch": "2.13.0+cpu", "pyyaml": "6.0.3"},
    }


def found(**overrides) -> dict:
    out = {
        "python": "3.11.7",
        "all_packages": {"torch": "2.13.0+cpu", "pyyaml": "6.0.3", "pip": "24.0"},
        "cann": None,
        "sources": {},
    }
    out.update(overrides)
    return out


def test_no_drift():
    assert drifts(baked(), found()) == []


def test_package_version_drift_names_package_pinned_and_found():
    assert drifts(baked(), found(all_packages={"torch": "2.12.0", "pyyaml": "6.0.3"})) == [
        "torch: pinned 2.13.0+cpu, found 2.12.0"
    ]


def test_missing_package():
    assert drifts(baked(), found(all_packages={"torch": "2.13.0+cpu"})) == ["pyyaml: pinned 6.0.3, found not installed"]


def test_python_minor_mismatch():
    assert drifts(baked(), found(python="3.10.14")) == ["python: pinned 3.11, found 3.10.14"]
    assert drifts(baked(python="3.1"), found(python="3.11.7")) == ["python: pinned 3.1, found 3.11.7"]


def test_cann_mismatch():
    spec = baked(cann={"version": "8.1.RC1", "installers": []})
    assert drifts(spec, found(cann="8.0.RC1")) == ["CANN: pinned 8.1.RC1, found 8.0.RC1"]
    assert drifts(spec, found(cann=None)) == ["CANN: pinned 8.1.RC1, found not installed"]
    assert drifts(spec, found(cann="8.1.RC1")) == []


def test_source_commit_mismatch():
    spec = baked(sources=[{"name": "Megatron-LM", "commit": MEGATRON_COMMIT}])
    other = "bcce6f54e075e3c3374ea67adefe54f3f2da2b07"
    assert drifts(spec, found(sources={"Megatron-LM": other})) == [
        f"source Megatron-LM: pinned {MEGATRON_COMMIT}, found {other}"
    ]
    assert drifts(spec, found()) == [f"source Megatron-LM: pinned {MEGATRON_COMMIT}, found not present"]
    assert drifts(spec, found(sources={"Megatron-LM": MEGATRON_COMMIT})) == []


def test_every_drift_is_listed():
    spec = baked(cann={"version": "8.1.RC1", "installers": []})
    problems = drifts(spec, found(python="3.10.1", all_packages={}, cann="8.0"))
    assert len(problems) == 4


def llm_env(*args: str, baked_spec_path: Path, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(environ or {}), "NPUBOX_BAKED_SPEC": str(baked_spec_path), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "llm", "env", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_env_json_on_the_host(tmp_path):
    proc = llm_env("--json", baked_spec_path=tmp_path / "absent.json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["python"] == platform.python_version()
    assert isinstance(info["packages"], dict)
    assert info["packages"].get("pyarrow") == metadata.version("pyarrow")
    assert info["image"] is None
    assert "all_packages" not in info
    assert set(info["devices"]) >= {"davinci", "nvidia"}


def test_verify_names_each_drift_and_exits_1(tmp_path):
    spec = baked_spec(load_spec("cpu"))
    host_pydantic = metadata.version("pydantic")
    spec["pins"] = {"pydantic": "0.0.1", "pyyaml": metadata.version("pyyaml")}
    spec["spec"]["python"] = "{}.{}".format(*sys.version_info[:2])
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    proc = llm_env("--verify", baked_spec_path=path, environ=spec["spec"]["env"])  # as the image's ENV sets them
    assert proc.returncode == 1
    assert f"drift: pydantic: pinned 0.0.1, found {host_pydantic}" in proc.stderr
    assert f"1 drift(s) from {spec['tag']}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_verify_passes_when_pins_match(tmp_path):
    spec = baked_spec(load_spec("cpu"))
    spec["pins"] = {name: metadata.version(name) for name in ("pydantic", "pyyaml", "rich")}
    spec["spec"]["python"] = "{}.{}".format(*sys.version_info[:2])
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    proc = llm_env("--verify", baked_spec_path=path, environ=spec["spec"]["env"])  # as the image's ENV sets them
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok: matches {spec['tag']} (3 pins)"


def test_verify_without_a_baked_spec(tmp_path):
    proc = llm_env("--verify", baked_spec_path=tmp_path / "absent.json")
    assert proc.returncode == 2
    assert "no baked spec" in proc.stderr and "Traceback" not in proc.stderr


def test_cann_version_from_the_real_toolkits_install_info(tmp_path, monkeypatch):
    # A real CANN toolkit records its version in <arch>-linux/ascend_toolkit_install.info, not version.info.
    from llm.runtime_report import cann_version

    (tmp_path / "aarch64-linux").mkdir()
    (tmp_path / "aarch64-linux" / "ascend_toolkit_install.info").write_text(
        "package_name=Ascend-cann-toolkit\nversion=8.0.RC1\n"
    )
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(tmp_path))
    assert cann_version() == "8.0.RC1"
    (tmp_path / "version.info").write_text("Version=8.1.RC1\n")
    assert cann_version() == "8.1.RC1"
