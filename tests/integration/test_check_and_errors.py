"""`invoke check` catches a tampered image; engine and build failures are one clear sentence."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, invoke


def _pip_download(spec: str, dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), spec],
        check=True,
        capture_output=True,
    )
    return next(dest.glob("*.whl"))


def test_check_passes_on_the_built_image(cpu_image):
    proc = invoke("check", "--env", "cpu")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_check_names_a_tampered_package(cpu_image, tmp_path):
    wheel = _pip_download("packaging==24.2", tmp_path)
    name = f"npubox-tamper-{os.getpid()}"
    tampered = "npubox/cpu:tampered"
    try:
        subprocess.run(
            [
                "docker",
                "create",
                "--name",
                name,
                "--user",
                "root",
                "--network",
                "none",
                cpu_image,
                "sh",
                "-c",
                f"python -m pip install --no-deps --no-index /tmp/{wheel.name}",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(["docker", "cp", str(wheel), f"{name}:/tmp/{wheel.name}"], check=True, capture_output=True)
        subprocess.run(["docker", "start", "--attach", name], check=True, capture_output=True)
        subprocess.run(["docker", "commit", name, tampered], check=True, capture_output=True)
        proc = invoke("check", "--env", "cpu", "--image", tampered)
        assert proc.returncode != 0
        assert "packaging: pinned 26.3, found 24.2" in proc.stdout
        assert "does not match its spec" in proc.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tampered], capture_output=True)


def _one_sentence_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_docker_not_installed(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    proc = invoke("build-image", "--env", "cpu", env={"PATH": str(bin_dir)})
    line = _one_sentence_error(proc)
    assert "Docker is not installed" in line and "apt-get install docker.io" in line


def test_daemon_not_running(tmp_path):
    proc = invoke("run", "--phase", "env", env={"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"})
    line = _one_sentence_error(proc)
    assert "Docker daemon is not running" in line and "dockerd" in line


def _spec_dir(tmp_path: Path, **replace: str) -> Path:
    envs = tmp_path / "envs"
    envs.mkdir()
    text = (REPO / "envs" / "cpu.yaml").read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    (envs / "cpu.yaml").write_text(text)
    shutil.copy(REPO / "envs" / "cpu.lock", envs / "cpu.lock")
    return envs


def test_base_image_missing(tmp_path):
    envs = _spec_dir(
        tmp_path,
        **{"image: python:3.11-slim-bookworm": "image: npubox-test/no-such-base:1", "suite: bookworm": "suite: trixie"},
    )
    proc = invoke("build-image", "--env", "cpu", env={"NPUBOX_ENVS_DIR": str(envs)})
    line = _one_sentence_error(proc)
    assert "base image npubox-test/no-such-base:1 is not present and could not be pulled" in line
    assert "invoke base-image --env cpu" in line


def test_build_step_failing(cpu_image, tmp_path):
    # A base without Python: the image's first RUN step fails inside the engine.
    base = "npubox-test/base-without-python:1"
    from llm.env.base import resolve_base
    from llm.env.spec import load_spec

    dockerfile = (
        f"FROM {resolve_base(load_spec('cpu'), pull=False)}\nRUN rm -f /usr/bin/python3* /usr/local/bin/python3*\n"
    )
    subprocess.run(
        ["docker", "build", "--network", "none", "-t", base, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    try:
        envs = _spec_dir(tmp_path, **{"image: python:3.11-slim-bookworm": f"image: {base}"})
        proc = invoke("build-image", "--env", "cpu", env={"NPUBOX_ENVS_DIR": str(envs)})
        line = _one_sentence_error(proc)
        assert "returned a non-zero code" in proc.stdout + proc.stderr  # the engine's own report stays visible
        assert "building the os stage of npubox/cpu:" in line and "failed" in line  # the step that failed
        assert "re-run `invoke build-image --env cpu`" in line
    finally:
        subprocess.run(["docker", "rmi", "-f", base], capture_output=True)


def test_a_failed_deps_install_leaves_no_container_and_no_image(cpu_image, tmp_path):
    """The deps are installed in a container of npubox's own (llm/env/deps_image.py): when the install fails, the
    error names the step, and neither that container nor a half-installed image is left behind."""
    import pytest

    from llm.env.base import resolve_base
    from llm.env.deps_image import SCRIPT, deps_image
    from llm.env.engine import image_exists
    from llm.env.spec import load_spec
    from llm.errors import NpuboxError

    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / SCRIPT).write_text("echo installing; touch /opt/half-installed; exit 3\n")
    base = resolve_base(load_spec("cpu"), pull=False)
    os_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", base], capture_output=True, text=True, check=True
    ).stdout.strip()
    before = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True).stdout.split()
    repo = "npubox-test/failing-deps"
    with pytest.raises(NpuboxError) as info:
        deps_image(repo, os_id, deps, echo=None, what="npubox/probe:1", hint="fix it")
    assert "installing the lock and the sources of npubox/probe:1 failed (exit 3)" in str(info.value)
    after = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True).stdout.split()
    assert after == before
    listed = subprocess.run(["docker", "images", "-q", repo], capture_output=True, text=True).stdout.split()
    assert listed == [] and not image_exists(repo)
