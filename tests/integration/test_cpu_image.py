"""The CPU image: built from the debootstrapped base, run sealed, rebuilt cheaply."""

import json
import os
import shutil
import socket
import subprocess
import threading

import llm.env.context as context_mod
import llm.env.image as image_mod
from llm.env.engine import inspect_image
from llm.env.spec import load_spec

from .conftest import invoke


def test_tag_is_the_specs_and_labels_record_every_pin(cpu_image):
    loaded = load_spec("cpu")
    assert cpu_image == loaded.tag
    labels = inspect_image(cpu_image)["Config"]["Labels"]
    assert labels["npubox.spec-hash"] == loaded.content_hash
    for name, version in loaded.pins().items():
        assert labels[f"npubox.pin.{name}"] == version
    assert labels["org.opencontainers.image.version"] == loaded.spec.version


def test_site_settings_are_not_in_the_image(cpu_image):
    info = inspect_image(cpu_image)
    blob = json.dumps(info["Config"]) + json.dumps(
        subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", cpu_image], capture_output=True, text=True
        ).stdout
    )
    pip_cfg = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    for line in pip_cfg.splitlines():
        value = line.split("=", 1)[1].strip("'\" ") if "=" in line else ""
        for item in value.split():
            if "/" in item:  # index URLs, find-links folders, the CA bundle path
                assert item not in blob, f"site setting {item} leaked into the image"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "PIP_CERT", "PIP_INDEX_URL"):
        if os.environ.get(var):
            assert os.environ[var] not in blob


def test_invoke_run_env_in_a_sealed_container(cpu_image, workspace):
    proc = invoke("run", "--phase", "env", "--workspace", str(workspace), check=True)
    assert " --rm --init --network none --read-only" in proc.stderr  # the full command is echoed
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", cpu_image, "python", "-m", "llm", "env", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(proc.stdout)
    assert info["packages"]["torch"] == "2.13.0+cpu"
    assert info["packages"]["megatron-core"] == "0.16.1"
    assert info["image"] == cpu_image
    verify = invoke("run", "--phase", "env", "--workspace", str(workspace), "--", "--verify", check=True)
    assert f"ok: matches {cpu_image}" in verify.stdout


def test_changing_llm_rebuilds_only_the_last_layers(cpu_image, tmp_path, monkeypatch):
    edited = tmp_path / "llm"
    shutil.copytree(context_mod.LLM_DIR, edited, ignore=shutil.ignore_patterns("__pycache__"))
    (edited / "_layer_probe.py").write_text("PROBE = 1\n")
    monkeypatch.setattr(context_mod, "LLM_DIR", edited)
    from llm.env.site import Site

    tag = image_mod.build_image(load_spec("cpu"), Site(), tag="npubox/cpu:layer-probe")
    try:
        before = inspect_image(cpu_image)["RootFS"]["Layers"]
        after = inspect_image(tag)["RootFS"]["Layers"]
        assert len(after) == len(before)
        # Every layer before `COPY llm/` (OS, venv, lock, spec) is reused; only the package
        # layer and its compileall layer differ.
        assert after[:-2] == before[:-2]
        assert after[-2] != before[-2]
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)


def test_the_venv_is_stored_once_and_no_wheel_in_a_layer(cpu_image):
    """The lock is installed in a committed container (llm/env/deps_image.py): one layer holds the venv, and no
    layer holds it again or holds the wheels it came from."""
    du = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "du", cpu_image, "-sb", "/opt/venv"],
        capture_output=True,
        text=True,
        check=True,
    )
    venv = int(du.stdout.split()[0])
    history = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{json .}}", cpu_image], capture_output=True, text=True
    )
    layers = [json.loads(line) for line in history.stdout.splitlines()]
    big = [row["CreatedBy"] for row in layers if _bytes(row["Size"]) > venv / 2]
    assert len(big) == 1 and "install-deps.sh" in big[0], big
    assert not any("wheels" in row["CreatedBy"] for row in layers)
    info = inspect_image(cpu_image)
    base = inspect_image(info["Config"]["Labels"]["org.opencontainers.image.base.name"])
    assert info["Size"] - base["Size"] < venv * 1.2  # the image adds the venv once, and little else


def _bytes(size: str) -> float:
    units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    for unit in sorted(units, key=len, reverse=True):
        if size.endswith(unit):
            return float(size[: -len(unit)]) * units[unit]
    return float(size)


def _serve_once(server: socket.socket):
    try:
        conn, _ = server.accept()
        conn.close()
    except OSError:
        pass


def test_sealed_container_cannot_reach_the_network(cpu_image, workspace):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(20)
    port = server.getsockname()[1]
    threading.Thread(target=_serve_once, args=(server,), daemon=True).start()
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # reachable from the host
    probe = (
        "import socket, sys\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\nexcept OSError as e:\n"
        "    print('refused', type(e).__name__)\nelse:\n    print('connected'); sys.exit(1)\n"
        "try:\n    socket.getaddrinfo('example.org', 443)\nexcept OSError:\n    print('no dns')\n"
        "else:\n    print('resolved'); sys.exit(1)\n"
    )
    proc = invoke("run", "--phase", "env", "--workspace", str(workspace), "--image", cpu_image)
    assert proc.returncode == 0, proc.stderr
    from llm.env import commands, container

    opts = commands.run_options(load_spec("cpu"), workspace)
    out = subprocess.run(
        ["docker", "run", "--rm", *container.sealed_flags(opts), cpu_image, "python", "-c", probe],
        capture_output=True,
        text=True,
    )
    server.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "refused" in out.stdout and "no dns" in out.stdout


def test_sealed_container_writes_only_the_workspace_as_the_host_user(cpu_image, workspace):
    from llm.env import commands, container

    opts = commands.run_options(load_spec("cpu"), workspace)
    script = (
        "for p in /etc/x /opt/venv/x /home/npubox/x /usr/x /var/x; do touch $p 2>/dev/null && echo WROTE $p; done; "
        "touch /workspace/made-inside && echo ok"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", *container.sealed_flags(opts), cpu_image, "sh", "-c", script],
        capture_output=True,
        text=True,
    )
    assert "WROTE" not in out.stdout, out.stdout
    assert out.stdout.strip().endswith("ok")
    made = workspace / "made-inside"
    owner = workspace.stat()
    assert (made.stat().st_uid, made.stat().st_gid) == (owner.st_uid, owner.st_gid)
    assert made.stat().st_uid != 0
