"""The real CANN and sources stages of the real Dockerfile, on the debootstrapped base, with a
stand-in CANN installer and a local git repository for MindSpeed (no NPU, no network)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from llm.env.arch import host_arch
from llm.env.image import BuildInputs, build_image
from llm.env.site import Site
from llm.env.spec import load_spec
from llm.errors import NpuboxError

from .ascend_standins import make_cann_toolkit_run, make_mindspeed_repo, make_nnal_run
from .conftest import REPO

CANN_VERSION = "8.1.RC1"


def _npu_spec(folder, commit: str):
    """The CPU stack's pins (so its lock applies) with accelerator npu, CANN from installers and MindSpeed."""
    text = (REPO / "envs" / "cpu.yaml").read_text()
    text = text.replace("name: cpu", "name: npu-standin").replace("accelerator: cpu", "accelerator: npu")
    text = text.replace("lock: cpu.lock", "lock: npu-standin.lock")
    text += f"""cann:
  version: {CANN_VERSION}
  installers: ["Ascend-cann-toolkit_{{version}}_linux-{{arch}}.run", "Ascend-cann-nnal_{{version}}_linux-{{arch}}.run"]
  set_env: [/usr/local/Ascend/ascend-toolkit/set_env.sh, /usr/local/Ascend/nnal/atb/set_env.sh]
sources:
  - name: MindSpeed
    url: https://example.invalid/MindSpeed.git
    commit: {commit}
    install: editable
"""
    (folder / "npu-standin.yaml").write_text(text)
    shutil.copy(REPO / "envs" / "cpu.lock", folder / "npu-standin.lock")
    return load_spec("npu-standin", folder)


@pytest.fixture(scope="module")
def standin(tmp_path_factory, cpu_image):
    root = tmp_path_factory.mktemp("ascend")
    vendor = root / "vendor"
    vendor.mkdir()
    make_cann_toolkit_run(vendor, CANN_VERSION, host_arch())
    make_nnal_run(vendor, CANN_VERSION, host_arch())
    cache = root / "source-cache"
    cache.mkdir()
    _, commit = make_mindspeed_repo(cache)
    envs = root / "envs"
    envs.mkdir()
    loaded = _npu_spec(envs, commit)
    inputs = BuildInputs(vendor=vendor, source_cache=cache)
    tag = build_image(loaded, Site(), inputs=inputs)
    yield loaded, tag, commit, inputs
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_cann_version_and_pinned_source_are_reported(standin):
    loaded, tag, commit, _ = standin
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", tag, "python", "-m", "llm", "env", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info = json.loads(out)
    assert info["cann"] == CANN_VERSION
    assert info["sources"] == {"MindSpeed": commit}
    verify = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", tag, "python", "-m", "llm", "env", "--verify"],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr


def test_set_env_is_baked_for_docker_exec(standin):
    _, tag, _, _ = standin
    name = "npubox-cann-exec-probe"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--network", "none", tag, "sleep", "60"],
        check=True,
        capture_output=True,
    )
    try:
        home = subprocess.run(
            ["docker", "exec", name, "sh", "-c", "echo $ASCEND_TOOLKIT_HOME"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert home == "/usr/local/Ascend/ascend-toolkit/latest"
        env = subprocess.run(["docker", "exec", name, "env"], capture_output=True, text=True, check=True).stdout
        assert "ASCEND_OPP_PATH=/usr/local/Ascend/ascend-toolkit/latest/opp" in env.splitlines()
        assert "/usr/local/Ascend/ascend-toolkit/latest/lib64" in next(
            line for line in env.splitlines() if line.startswith("LD_LIBRARY_PATH=")
        )
        # NNAL's script, sourced after the toolkit's as MindSpeed-LLM's guides do, is baked too.
        assert "ATB_HOME_PATH=/usr/local/Ascend/nnal/atb/latest/atb/cxx_abi_0" in env.splitlines()
        assert "/usr/local/Ascend/nnal/atb/latest/atb/cxx_abi_0/lib" in next(
            line for line in env.splitlines() if line.startswith("LD_LIBRARY_PATH=")
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_testinfra_checks_the_cann_image(standin, tmp_path):
    """tests/infra (what `invoke check` runs) against the stand-in CANN image, sealed as `invoke up` seals it
    (no NPU here, so without devices): its pins, sources, and the CANN and NNAL exports in ENV."""
    loaded, tag, _, _ = standin
    name = "npubox-cann-infra-probe"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    os.chown(workspace, 1000, 1000)
    sealed = [
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        "1000:1000",
        "--cap-drop",
        "ALL",
        "--mount",
        f"type=bind,source={workspace},target=/workspace",
    ]
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, *sealed, tag, "sleep", "300"], check=True, capture_output=True
    )
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                str(REPO / "tests" / "infra"),
                f"--hosts=docker://{name}",
                "--npubox-env=npu-standin",
                "-p",
                "no:cacheprovider",
                "-v",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "NPUBOX_ENVS_DIR": str(loaded.path.parent)},
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "test_cann_exports_are_in_the_image_env[docker://npubox-cann-infra-probe] PASSED" in proc.stdout
        assert (
            "test_every_source_commit_is_recorded_in_the_image[docker://npubox-cann-infra-probe] PASSED" in proc.stdout
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_pinned_commit_is_the_one_installed(standin):
    _, tag, _, _ = standin
    out = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            tag,
            "python",
            "-c",
            "import mindspeed; print(mindspeed.VERSION, mindspeed.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["pinned", "/opt/npubox/sources/MindSpeed/mindspeed/__init__.py"]


def test_unknown_commit_fails_naming_source_and_sha(standin, tmp_path):
    loaded, _, _, inputs = standin
    missing = "0123456789abcdef0123456789abcdef01234567"
    bad = _npu_spec(tmp_path, missing)
    with pytest.raises(NpuboxError) as err:
        build_image(bad, Site(), inputs=inputs)
    assert f"source MindSpeed: commit {missing} does not exist in" in str(err.value)


def test_missing_installer_is_named_before_any_build(standin, tmp_path):
    _, _, _, inputs = standin
    loaded = standin[0]
    with pytest.raises(NpuboxError) as err:
        build_image(loaded, Site(), inputs=BuildInputs(vendor=tmp_path, source_cache=inputs.source_cache))
    assert f"Ascend-cann-toolkit_{CANN_VERSION}_linux-{host_arch()}.run" in str(err.value)
    assert "--vendor" in str(err.value)
